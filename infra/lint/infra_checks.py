"""Checks of infra/ that no off-the-shelf linter does, run by scripts/lint-infra.

Subcommands (each prints one `ok:` / `FAIL:` line per item, and exits 1 when any item failed):

  policies     parliament on every infra/iam/*.json, with the few findings that are false
               positives suppressed below, each with its reason.
  consistency  the IAM policies and trust policies in the CloudFormation / SAM templates equal the
               plain files infra/iam/*.json once the templates' parameters take their defaults
               (the example values) and the pseudo parameters the example account and region;
               every role in a template is mapped, every plain file is used or listed as plain
               only; the EKS ServiceAccount matches the IRSA trust policy.
  configs BIN  every logferry config shipped in infra/ passes `BIN validate`: the image's default
               config, the TOML embedded in each Kubernetes ConfigMap (validated with exactly the
               environment variable names the workload mounting it defines, so a `${VAR}` the
               manifest does not set fails).
  firelens BIN the Fluent Bit config ECS would generate for the FireLens task definition
               (infra/ecs/) passes `BIN validate --fluent-bit-config`.
  checkov JSON [JSON...]
               summarises checkov's JSON reports: every failed check, and every file checkov
               could not parse (checkov itself only warns about those and scans the rest).
  docker-build the Dockerfile's build stage runs infra/docker/build-binary (the static `image`
               profile build), which scripts/build-image, run by scripts/test, runs too; its runtime stage
               is the one scripts/build-image builds (`FROM scratch AS runtime`); the build context it gets (.dockerignore applied to the tracked files, then
               its COPY instructions) holds every library, binary, build script and bench target
               of the workspace (`cargo metadata` there against the repository), so a new
               crate, build.rs or source directory cannot be left out of the image unnoticed.
  lambda-env   the SAM template's environment variables are ones logferry-lambda reads
               (lambda/src/settings.rs), and LOGFERRY_SINK's allowed values are sinks it knows.

Runs with the infra lint venv's Python (cfn-lint's template decoder, parliament, PyYAML).
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
IAM = INFRA / "iam"


def k8s_manifests() -> list[str]:
    """The Kubernetes manifests: infra/eks/<variant>/*.yaml (infra/eks/irsa-role.yaml is
    CloudFormation)."""
    return sorted(glob.glob(str(INFRA / "eks/*/*.yaml")))


# The example values the plain policy files carry (infra/iam/*.json).
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
}

# template -> role logical id -> ({inline policy name: plain policy file}, plain trust file).
ROLE_FILES = {
    "ecs/logferry-firelens.yaml": {
        "TaskRole": ({"logferry-delivery": "ecs-task-role.json"}, "ecs-task-role.trust.json"),
        "ExecutionRole": (
            {"logferry-task-execution": "ecs-task-execution-role.json"},
            "ecs-task-execution-role.trust.json",
        ),
    },
    "eks/irsa-role.yaml": {
        "Role": ({"logferry-delivery": "eks-irsa-role.json"}, "eks-irsa-role.trust.json"),
    },
    "lambda/template.yaml": {
        "ForwarderRole": (
            {
                "logferry-forwarder": "lambda-forwarder-role.json",
                "logferry-forwarder-failures": "lambda-forwarder-failures.json",
            },
            "lambda-forwarder-role.trust.json",
        ),
    },
}
# Plain files no template creates a role for, and why.
PLAIN_ONLY = {
    "assume-delivery-role.json": "added to a role when a sink uses role_arn (cross-account delivery)",
}

# parliament findings that are false positives here: (issue, file regex, detail regex, reason).
PARLIAMENT_SUPPRESSED = [
    (
        "MALFORMED",
        r".*\.trust\.json",
        r"Statement contains neither Resource nor NotResource",
        "a role trust policy is a resource policy attached to the role: it has no Resource element "
        "(IAM rejects one); parliament checks every document as an identity policy",
    ),
    (
        "UNKNOWN_FEDERATION_SOURCE",
        r"eks-irsa-role\.trust\.json",
        r"arn:aws:iam::\d{12}:oidc-provider/oidc\.eks\.[a-z0-9-]+\.amazonaws\.com/id/[A-Z0-9]+",
        "an EKS cluster's IAM OIDC provider (IRSA); parliament 1.6 knows only SAML providers and a "
        "few public web identity providers",
    ),
    (
        "CREDENTIALS_EXPOSURE",
        r"assume-delivery-role\.json",
        r"",
        "sts:AssumeRole returning credentials is the purpose of this policy (role_arn), limited "
        "to the one delivery role",
    ),
    (
        "CREDENTIALS_EXPOSURE",
        r"ecs-task-execution-role\.json",
        r"",
        "ecr:GetAuthorizationToken is how ECS pulls images from ECR; the token only works for "
        "repositories the role may pull from (one repository here)",
    ),
]

failures = 0


def report(ok: bool, what: str, detail: str = "") -> None:
    global failures
    if ok:
        print(f"ok: {what}")
    else:
        failures += 1
        print(f"FAIL: {what}" + (f"\n{detail}" if detail else ""))


# --- CloudFormation evaluation -----------------------------------------------------------------


class Unresolvable(Exception):
    pass


def load_template(path: Path) -> dict:
    return cfn_yaml.load(str(path))


def resolver(template: dict):
    """Returns a function that evaluates the intrinsics found in IAM documents, with parameters at
    their defaults and resources' Ref at their name property."""
    params = {name: spec.get("Default") for name, spec in (template.get("Parameters") or {}).items()}
    name_props = {"AWS::Logs::LogGroup": "LogGroupName", "AWS::IAM::Role": "RoleName"}

    def ref(name: str):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in params:
            if params[name] is None:
                raise Unresolvable(f"parameter {name} has no default")
            return params[name]
        resource = (template.get("Resources") or {}).get(name)
        if resource and resource.get("Type") in name_props:
            value = resource.get("Properties", {}).get(name_props[resource["Type"]])
            if value is not None:
                return evaluate(value)
        raise Unresolvable(f"Ref {name}")

    def getatt(name: str, attribute: str):
        resource = (template.get("Resources") or {}).get(name, {})
        if resource.get("Type") == "AWS::SQS::Queue" and attribute == "Arn":
            queue = evaluate(resource.get("Properties", {}).get("QueueName"))
            if queue:
                return f"arn:{PSEUDO['AWS::Partition']}:sqs:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:{queue}"
        raise Unresolvable(f"Fn::GetAtt {name}.{attribute}")

    def sub(text: str, local: dict) -> str:
        def one(m: re.Match) -> str:
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in local:
                return str(evaluate(local[key]))
            return str(ref(key))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def evaluate(node):
        if isinstance(node, dict):
            if len(node) == 1:
                ((key, value),) = node.items()
                if key == "Ref":
                    return ref(value)
                if key == "Fn::Sub":
                    if isinstance(value, list):
                        return sub(value[0], value[1])
                    return sub(value, {})
                if key == "Fn::GetAtt":
                    return getatt(*(value.split(".", 1) if isinstance(value, str) else value))
                if key == "Fn::Join":
                    return value[0].join(str(evaluate(v)) for v in value[1])
                if key.startswith("Fn::"):
                    raise Unresolvable(key)
            return {k: evaluate(v) for k, v in node.items()}
        if isinstance(node, list):
            return [evaluate(v) for v in node]
        return node

    return evaluate


def normalise(doc: dict) -> dict:
    """Order-insensitive where IAM is: the action and resource lists of a statement."""
    doc = json.loads(json.dumps(doc))  # plain dicts / lists / str from cfn-lint's node types
    for statement in doc.get("Statement", []):
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            if key in statement:
                value = statement[key]
                statement[key] = sorted(value) if isinstance(value, list) else [value]
    return doc


def diff(a: dict, b: dict) -> str:
    left = json.dumps(a, indent=2, sort_keys=True).splitlines()
    right = json.dumps(b, indent=2, sort_keys=True).splitlines()
    return "\n".join(
        "    " + line
        for line in difflib.unified_diff(right, left, "infra/iam (plain file)", "template", lineterm="")
    )


def check_consistency() -> None:
    used = set()
    for template_rel, roles in ROLE_FILES.items():
        path = INFRA / template_rel
        template = load_template(path)
        evaluate = resolver(template)
        resources = template.get("Resources") or {}
        template_roles = {k for k, v in resources.items() if v.get("Type") == "AWS::IAM::Role"}
        unmapped = template_roles - roles.keys()
        report(
            not unmapped,
            f"{template_rel}: every IAM role maps to a plain file",
            f"    roles without a plain file in infra/iam: {sorted(unmapped)}" if unmapped else "",
        )
        for role, (policy_files, trust_file) in roles.items():
            used.update({*policy_files.values(), trust_file})
            props = resources.get(role, {}).get("Properties", {})
            inline = {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies") or []}
            extra = sorted(inline.keys() - policy_files.keys())
            report(
                not extra,
                f"{template_rel} {role}: every inline policy maps to a plain file",
                f"    inline policies without a plain file in infra/iam: {extra}",
            )
            pairs = [
                (plain, f"inline policy {name}", inline.get(name)) for name, plain in policy_files.items()
            ]
            pairs.append((trust_file, "trust policy", props.get("AssumeRolePolicyDocument")))
            for plain, what, node in pairs:
                label = f"{template_rel} {role} {what} == infra/iam/{plain}"
                if node is None:
                    report(False, label, f"    {role} has no {what}")
                    continue
                try:
                    value = evaluate(node)
                    if isinstance(value, str):
                        value = json.loads(value)
                except (Unresolvable, json.JSONDecodeError) as e:
                    report(False, label, f"    cannot evaluate the template's document: {e}")
                    continue
                expected = json.loads((IAM / plain).read_text())
                got, want = normalise(value), normalise(expected)
                report(got == want, label, diff(got, want))
    plain_files = {Path(p).name for p in glob.glob(str(IAM / "*.json"))}
    orphans = plain_files - used - PLAIN_ONLY.keys()
    report(
        not orphans,
        "every infra/iam/*.json is used by a template or listed as plain only",
        f"    neither: {sorted(orphans)}" if orphans else "",
    )

    # The ServiceAccount is the one the IRSA trust policy admits, annotated with the role.
    trust = json.loads((IAM / "eks-irsa-role.trust.json").read_text())
    subs = [
        value
        for statement in trust["Statement"]
        for key, value in statement.get("Condition", {}).get("StringEquals", {}).items()
        if key.endswith(":sub")
    ]
    irsa = load_template(INFRA / "eks/irsa-role.yaml")
    role_name = irsa["Parameters"]["RoleName"]["Default"]
    expected_arn = f"arn:aws:iam::{PSEUDO['AWS::AccountId']}:role/{role_name}"
    accounts = [
        doc
        for f in k8s_manifests()
        for doc in yaml.safe_load_all(Path(f).read_text())
        if doc and doc.get("kind") == "ServiceAccount"
    ]
    for sa in accounts:
        meta = sa["metadata"]
        principal = f"system:serviceaccount:{meta['namespace']}:{meta['name']}"
        report(
            subs == [principal],
            f"ServiceAccount {meta['namespace']}/{meta['name']} is the IRSA trust policy's subject",
            f"    trust policy admits {subs}, manifest defines {principal}",
        )
        annotated = meta.get("annotations", {}).get("eks.amazonaws.com/role-arn")
        report(
            annotated == expected_arn,
            f"ServiceAccount {meta['name']} is annotated with the IRSA role ({expected_arn})",
            f"    annotation: {annotated}",
        )
    report(bool(accounts), "infra/eks defines a ServiceAccount")


# --- parliament --------------------------------------------------------------------------------


def check_policies() -> None:
    import parliament
    from parliament import analyze_policy_string, enhance_finding, override_config

    # As the parliament CLI does with --include-community-auditors: their findings' settings.
    override_config(Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml")
    severities = ["MUTE", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
    for path in sorted(glob.glob(str(IAM / "*.json"))):
        rel = os.path.relpath(path, REPO)
        policy = analyze_policy_string(Path(path).read_text(), filepath=rel, include_community_auditors=True)
        problems = []
        for finding in policy.findings:
            enhance_finding(finding)
            if severities.index(finding.severity) < severities.index("LOW"):
                continue
            detail = str(finding.detail or "")
            if any(
                finding.issue == issue
                and re.fullmatch(file_re, Path(path).name)
                and re.search(detail_re, detail)
                for issue, file_re, detail_re, _reason in PARLIAMENT_SUPPRESSED
            ):
                continue
            problems.append(
                f"    {finding.severity} {finding.issue}: {finding.title} {detail} {finding.location}"
            )
        report(not problems, f"parliament {rel}", "\n".join(problems))


# --- configs -----------------------------------------------------------------------------------


def validate(binary: str, label: str, args: list[str], env_names: list[str]) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update({name: "example" for name in env_names})
    result = subprocess.run([binary, "validate", *args], env=env, capture_output=True, text=True)
    report(
        result.returncode == 0,
        f"logferry validate {label}",
        "    " + (result.stdout + result.stderr).strip().replace("\n", "\n    "),
    )


def workload_env(docs: list[dict], configmap: str) -> list[list[str]]:
    """The env names of each logferry container in a workload that mounts `configmap`."""
    found = []
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "DaemonSet", "StatefulSet", "Job", "Pod"):
            continue
        spec = doc["spec"]["template"]["spec"] if "template" in doc.get("spec", {}) else doc["spec"]
        volumes = {
            v["name"] for v in spec.get("volumes", []) if v.get("configMap", {}).get("name") == configmap
        }
        if not volumes:
            continue
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            if any(m["name"] in volumes for m in container.get("volumeMounts", [])):
                found.append([e["name"] for e in container.get("env", [])])
    return found


def render_firelens(template_path: Path) -> str:
    """The Fluent Bit config the ECS agent generates for the log router of this task definition
    (awsvpc), rendered as tests/fixtures/firelens/README.md describes."""
    template = load_template(template_path)
    evaluate = resolver(template)
    task = next(r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition")
    containers = evaluate(task["Properties"]["ContainerDefinitions"])
    router = next(c for c in containers if "FirelensConfiguration" in c)
    memory = router.get("MemoryReservation") or router.get("Memory")
    lines = [
        "",
        "[INPUT]",
        "    Name forward",
        f"    Mem_Buf_Limit {int(memory) // 2 if memory else 25}MB",
        "    unix_path /var/run/fluent.sock",
        "",
        "[INPUT]",
        "    Name forward",
        "    Listen 127.0.0.1",
        "    Port 24224",
        "",
        "[INPUT]",
        "    Name tcp",
        "    Tag firelens-healthcheck",
        "    Listen 127.0.0.1",
        "    Port 8877",
    ]
    if (
        str(router["FirelensConfiguration"].get("Options", {}).get("enable-ecs-log-metadata", "true"))
        != "false"
    ):
        lines += [
            "",
            "[FILTER]",
            "    Name record_modifier",
            "    Match *",
            "    Record ecs_cluster example",
            f"    Record ecs_task_arn arn:aws:ecs:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:task/example/0123456789abcdef0123456789abcdef",
            f"    Record ecs_task_definition {task['Properties'].get('Family', 'example')}:1",
        ]
    lines += ["", "[OUTPUT]", "    Name null", "    Match firelens-healthcheck"]
    for container in containers:
        log = container.get("LogConfiguration") or {}
        if log.get("LogDriver") != "awsfirelens":
            continue
        options = dict(log.get("Options") or {})
        name = options.pop("Name")
        lines += ["", "[OUTPUT]", f"    Name {name}", f"    Match {container['Name']}-firelens*"]
        lines += [f"    {key} {options[key]}" for key in sorted(options)]
    return "\n".join(lines) + "\n"


def check_configs(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        report(False, f"logferry binary {binary}", "    build it first: cargo build --bin logferry")
        return
    validate(
        binary,
        "infra/docker/logferry.toml (the image's default config)",
        ["-c", str(INFRA / "docker/logferry.toml")],
        [],
    )

    with tempfile.TemporaryDirectory(prefix="lint-infra-") as tmp:
        docs = [
            doc
            for f in k8s_manifests()
            for doc in yaml.safe_load_all(Path(f).read_text())
            if isinstance(doc, dict) and "kind" in doc
        ]
        embedded = 0
        for doc in docs:
            if doc["kind"] != "ConfigMap":
                continue
            name = doc["metadata"]["name"]
            for key, text in (doc.get("data") or {}).items():
                if not key.endswith(".toml"):
                    continue
                embedded += 1
                path = Path(tmp) / f"{name}-{key}"
                path.write_text(text)
                users = workload_env(docs, name)
                report(bool(users), f"ConfigMap {name} is mounted by a logferry container")
                for env_names in users or [[]]:
                    validate(
                        binary,
                        f"ConfigMap {name} {key} (env: {', '.join(env_names) or 'none'})",
                        ["-c", str(path)],
                        env_names,
                    )
        report(embedded > 0, "infra/eks has ConfigMaps with a logferry config")


def check_firelens(binary: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lint-infra-") as tmp:
        conf = Path(tmp) / "fluent-bit.conf"
        conf.write_text(render_firelens(INFRA / "ecs/logferry-firelens.yaml"))
        validate(
            binary,
            "--fluent-bit-config (what ECS generates for infra/ecs/logferry-firelens.yaml)",
            ["--fluent-bit-config", str(conf)],
            [],
        )


# --- checkov reports --------------------------------------------------------------------------


def check_checkov(paths: list[str]) -> None:
    for path in paths:
        data = json.loads(Path(path).read_text() or "[]")
        for run in data if isinstance(data, list) else [data]:
            kind = run.get("check_type", "?")
            summary = run.get("summary", {})
            failed = run.get("results", {}).get("failed_checks", [])
            lines = [
                f"    {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
                for c in failed
            ]
            report(
                not failed,
                f"checkov {kind}: {summary.get('passed', 0)} passed, {summary.get('skipped', 0)} "
                f"skipped with a reason in the file",
                "\n".join(lines),
            )
            errors = summary.get("parsing_errors", 0)
            report(
                errors == 0,
                f"checkov {kind}: every file parsed",
                f"    {errors} file(s) could not be parsed: {run.get('results', {}).get('parsing_errors')}",
            )


# --- Dockerfile build ---------------------------------------------------------------------------


def dockerignore_excludes(patterns: list[tuple[bool, str]], path: str) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent directories,
    decides; `!` patterns re-include."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in patterns:
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if any(re.match(regex, c) for c in candidates):
            excluded = not negated
    return excluded


def build_stage(dockerfile: str) -> tuple[list[list[str]], list[str]]:
    """The first stage's COPY instructions (sources, destination) and RUN commands (joined)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    first = stages[0].splitlines()
    copies = [line.split()[1:] for line in first if line.startswith("COPY ") and "--from" not in line]
    runs = [line[4:] for line in first if line.startswith("RUN ")]
    return copies, runs


def check_docker_build() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copies, runs = build_stage(dockerfile)
    script = "infra/docker/build-binary"
    build = "cargo build --profile image --locked --bin logferry"

    def runs_line(text: str, command: str) -> bool:
        return re.search(r"^\s*" + re.escape(command) + r"(\s|$)", text, re.M) is not None

    in_docker = any(re.search(r"(^|\s)" + re.escape(script) + r"(\s|$)", r) for r in runs)
    in_script = runs_line((REPO / script).read_text(), build)
    in_build_image = runs_line((REPO / "scripts/build-image").read_text(), script)
    in_test = runs_line((REPO / "scripts/test").read_text(), "scripts/build-image")
    report(
        in_docker and in_script and in_build_image and in_test,
        f"the Dockerfile's build stage runs `{script}` (`{build}`), as scripts/build-image does "
        "for scripts/test",
        f"    Dockerfile: {in_docker}, {script} runs the build: {in_script}, "
        f"scripts/build-image runs it: {in_build_image}, scripts/test runs scripts/build-image: {in_test}",
    )
    report(
        re.search(r"^FROM scratch AS runtime$", dockerfile, re.M) is not None
        and "sed -n '/^FROM scratch AS runtime$/,$p' Dockerfile" in (REPO / "scripts/build-image").read_text(),
        "the Dockerfile's last stage is `FROM scratch AS runtime`, the text scripts/build-image builds",
    )

    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    context = [f for f in tracked if not dockerignore_excludes(patterns, f)]

    with tempfile.TemporaryDirectory(prefix="lint-infra-docker-") as tmp:
        root = Path(tmp)
        for args in copies:
            *sources, dest = args
            for source in (src.rstrip("/") for src in sources):
                if source in context:  # a file: into dest/ (or as dest when it names a file)
                    placed = {source: Path(dest) / Path(source).name if dest.endswith("/") else Path(dest)}
                else:  # a directory: its contents into dest
                    placed = {
                        f: Path(dest) / f[len(source) + 1 :] for f in context if f.startswith(source + "/")
                    }
                for f, rel in placed.items():
                    target = root / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes((REPO / f).read_bytes())

        def targets(directory: Path) -> tuple[set, str]:
            result = subprocess.run(
                ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline", "--locked"],
                cwd=directory,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                return set(), result.stderr.strip()
            data = json.loads(result.stdout)
            root_dir = data["workspace_root"]
            return {
                (p["name"], kind, t["name"], os.path.relpath(t["src_path"], root_dir))
                for p in data["packages"]
                for t in p["targets"]
                for kind in t["kind"]
                if kind in ("lib", "bin", "custom-build", "bench", "proc-macro")
            }, ""

        want, _ = targets(REPO)
        got, error = targets(root)
        missing = sorted(want - got)
        report(
            not error and not missing,
            "the Docker build context holds every lib, bin, build script and bench of the workspace",
            f"    cargo metadata in the context: {error}"
            if error
            else f"    missing from the image's build: {missing}",
        )

    runtime_copies = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ][sum(len(c) - 1 for c in copies) :]
    absent = [c for c in runtime_copies if c not in context]
    report(
        not absent,
        "the runtime stage's COPY sources are in the build context",
        f"    not in the context: {absent}",
    )


# --- Lambda environment ------------------------------------------------------------------------


def check_lambda_env() -> None:
    settings = (REPO / "lambda/src/settings.rs").read_text()
    block = re.search(r"pub const VARIABLES: &\[&str\] = &\[(.*?)\];", settings, re.S)
    known = set(re.findall(r'"(LOGFERRY_[A-Z_]+)"', block.group(1))) if block else set()
    report(bool(known), "lambda/src/settings.rs lists the variables logferry-lambda reads")
    sinks = set(re.findall(r'^\s*"([a-z]+)" => \{', settings, re.M))

    template = load_template(INFRA / "lambda/template.yaml")
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    for name, function in functions.items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        unknown = sorted(v for v in variables if v.startswith("LOGFERRY_") and v not in known)
        report(
            not unknown,
            f"{name}: every LOGFERRY_* variable is one logferry-lambda reads",
            f"    unknown: {unknown}",
        )
        allowed = template["Parameters"]["Sink"]["AllowedValues"]
        report(
            set(allowed) <= sinks,
            f"{name}: LOGFERRY_SINK's allowed values {allowed} are sinks logferry-lambda knows ({sorted(sinks)})",
        )
    report(bool(functions), "infra/lambda/template.yaml defines the forwarder function")


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "policies":
        check_policies()
    elif command == "consistency":
        check_consistency()
    elif command == "configs" and len(sys.argv) == 3:
        check_configs(sys.argv[2])
    elif command == "checkov" and len(sys.argv) > 2:
        check_checkov(sys.argv[2:])
    elif command == "firelens" and len(sys.argv) == 3:
        check_firelens(sys.argv[2])
    elif command == "docker-build":
        check_docker_build()
    elif command == "lambda-env":
        check_lambda_env()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
