# shellcheck shell=bash disable=SC2034  # variables here are for the scripts that source this file
# Shared paths and helpers for scripts/setup, scripts/test, scripts/demo and friends.
# Source it; it defines variables and functions only (no output, nothing exported), plus an
# EXIT/INT/TERM trap that stops every background process registered through `spawn`/`on_exit`.
#
# Every location can be overridden from the environment so that CI, a developer's machine and
# several clones can share the slow parts (tansu takes ~13 minutes to build):
#   LOGFERRY_VENV           Python venv with moto, boto3, confluent-kafka, ... (default <repo>/.venv)
#   LOGFERRY_CACHE          cache shared by clones; tansu lives in its bin/ (default ~/.cache/logferry)
#   LOGFERRY_KINESALITE_DIR folder whose node_modules holds kinesalite (default <repo>/.tools/node)
#   LOGFERRY_PYTHON         interpreter used to create the venv (default python3)
#   LOGFERRY_LAMBDA_VENV    venv with cargo-lambda and zig (default $LOGFERRY_CACHE/venv-lambda)
# test-kit/src/paths.rs resolves the same variables with the same defaults.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOGFERRY_VENV="${LOGFERRY_VENV:-$REPO/.venv}"
LOGFERRY_CACHE="${LOGFERRY_CACHE:-${HOME:-/root}/.cache/logferry}"
KINESALITE_DIR="${LOGFERRY_KINESALITE_DIR:-$REPO/.tools/node}"
PYTHON="$LOGFERRY_VENV/bin/python"
MOTO_SERVER="$LOGFERRY_VENV/bin/moto_server"
TANSU_BIN="$LOGFERRY_CACHE/bin/tansu"
LAMBDA_VENV="${LOGFERRY_LAMBDA_VENV:-$LOGFERRY_CACHE/venv-lambda}"
KINESALITE_LAUNCHER="$REPO/tests/support/kinesalite.js"
# Where cargo puts what the scripts build (they run cargo from the repository's root, so a
# relative CARGO_TARGET_DIR is taken from there, as cargo does).
CARGO_TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$CARGO_TARGET" == /* ]] || CARGO_TARGET="$REPO/$CARGO_TARGET"
PYTHON_REQUIREMENTS="$REPO/tests/support/requirements.txt"

# Pinned tool versions: bump here, scripts/setup reinstalls on the next run.
TANSU_VERSION="0.6.0"
KINESALITE_VERSION="3.3.3"
CARGO_LAMBDA_VERSION="1.9.2"
ZIGLANG_VERSION="0.17.0"

log() { printf '%s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Prints a TCP port that was free on 127.0.0.1 a moment ago, from below the kernel's ephemeral
# range (tests/support/free_port.py says why). Racy only against other listeners; callers start
# their server right away and check it with wait_port.
free_port() {
    python3 "$REPO/tests/support/free_port.py"
}

# wait_port HOST PORT TIMEOUT_SECONDS [PID]
# Waits until HOST:PORT accepts a TCP connection. Fails after TIMEOUT seconds, or at once when
# the optional PID (the server being waited for) has exited, so a crash is not a long hang.
wait_port() {
    local host="$1" port="$2" timeout="$3" pid="${4:-}"
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before $host:$port accepted connections"
            return 1
        fi
        sleep 0.1
    done
    log "timed out after ${timeout}s waiting for $host:$port"
    return 1
}

# --- cleanup registry -------------------------------------------------------------------------
# Background processes started with `spawn` (or registered with `register_pid`) and commands
# given to `on_exit` are stopped/run when the sourcing script exits, however it exits.
_LOGFERRY_PIDS=()
_LOGFERRY_GROUPS=()
_LOGFERRY_EXIT_CMDS=()

register_pid() { _LOGFERRY_PIDS+=("$1"); }
# register_group PID: PID leads its own process group (started with `setsid`); on exit the
# whole group is stopped, so a build it runs (cargo and its rustc children) stops with it.
register_group() { _LOGFERRY_GROUPS+=("$1"); }
on_exit() { _LOGFERRY_EXIT_CMDS+=("$*"); }

_logferry_cleanup() {
    local status=$? pid cmd i
    trap - EXIT INT TERM
    for ((i = ${#_LOGFERRY_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
        cmd="${_LOGFERRY_EXIT_CMDS[i]}"
        eval "$cmd" || true
    done
    for pid in "${_LOGFERRY_GROUPS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "${_LOGFERRY_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Give servers a moment to flush and exit, then force the stragglers.
    local deadline=$((SECONDS + 5))
    for pid in "${_LOGFERRY_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for pid in "${_LOGFERRY_GROUPS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    exit "$status"
}
trap _logferry_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# spawn LOGFILE CMD [ARGS...]: runs CMD in the background with stdout+stderr to LOGFILE,
# registers it for cleanup and sets SPAWNED_PID.
spawn() {
    local logfile="$1"
    shift
    "$@" >"$logfile" 2>&1 &
    SPAWNED_PID=$!
    register_pid "$SPAWNED_PID"
}

# start_fake_kinesis TOOLS_DIR WORK_DIR [ARGS...]: the bench's fake-kinesis (../shared/bench/tools,
# built into TOOLS_DIR) over TLS with its CA written to WORK_DIR/ca.pem, stopped on exit. Sets
# FK_PORT (its HTTP port: /stats) and FK_TLS_PORT (the endpoint logferry uses).
start_fake_kinesis() {
    local tools="$1" work="$2"
    shift 2
    [[ -x "$tools/fake-kinesis" ]] ||
        die "no $tools/fake-kinesis: build ../shared/bench/tools as ../shared/bench/README.md says"
    FK_PORT=$(free_port)
    FK_TLS_PORT=$(free_port)
    spawn "$work/fake-kinesis.log" "$tools/fake-kinesis" --port "$FK_PORT" \
        --tls-port "$FK_TLS_PORT" --cert-out "$work/ca.pem" "$@"
    wait_port 127.0.0.1 "$FK_PORT" 10 "$SPAWNED_PID"
    wait_port 127.0.0.1 "$FK_TLS_PORT" 10 "$SPAWNED_PID"
}

# require_tool PATH: fails with a pointer to scripts/setup when a tool is not installed.
require_tool() {
    [[ -x "$1" ]] || die "$1 is missing: run scripts/setup"
}

# --- service launchers (127.0.0.1 only, free port, stopped on exit) --------------------------
# Each sets <NAME>_PORT, <NAME>_PID and <NAME>_ENDPOINT; logs go to LOGDIR (default: a temp dir).

_logdir() {
    if [[ -z "${LOGDIR:-}" ]]; then
        LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/logferry-services.XXXXXX")"
    fi
    mkdir -p "$LOGDIR"
}

# moto: Kinesis, STS, IAM, CloudWatch Logs. Endpoint in MOTO_ENDPOINT (http://127.0.0.1:PORT).
start_moto() {
    require_tool "$MOTO_SERVER"
    _logdir
    MOTO_PORT="$(free_port)"
    spawn "$LOGDIR/moto.log" "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT"
    MOTO_PID=$SPAWNED_PID
    wait_port 127.0.0.1 "$MOTO_PORT" 30 "$MOTO_PID" || die "moto did not start; see $LOGDIR/moto.log"
    MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
}

# kinesalite: fast in-memory Kinesis. Endpoint in KINESALITE_ENDPOINT.
start_kinesalite() {
    [[ -f "$KINESALITE_DIR/node_modules/kinesalite/package.json" ]] ||
        die "kinesalite is missing under $KINESALITE_DIR: run scripts/setup"
    _logdir
    KINESALITE_PORT="$(free_port)"
    spawn "$LOGDIR/kinesalite.log" node "$KINESALITE_LAUNCHER" "$KINESALITE_PORT" "$KINESALITE_DIR"
    KINESALITE_PID=$SPAWNED_PID
    wait_port 127.0.0.1 "$KINESALITE_PORT" 30 "$KINESALITE_PID" ||
        die "kinesalite did not start; see $LOGDIR/kinesalite.log"
    KINESALITE_ENDPOINT="http://127.0.0.1:$KINESALITE_PORT"
}

# tansu: Kafka-compatible broker, in-memory. Bootstrap address in TANSU_BOOTSTRAP (host:port).
start_tansu() {
    require_tool "$TANSU_BIN"
    _logdir
    TANSU_PORT="$(free_port)"
    spawn "$LOGDIR/tansu.log" "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --storage-engine "memory://tansu/"
    TANSU_PID=$SPAWNED_PID
    wait_port 127.0.0.1 "$TANSU_PORT" 30 "$TANSU_PID" || die "tansu did not start; see $LOGDIR/tansu.log"
    TANSU_BOOTSTRAP="127.0.0.1:$TANSU_PORT"
    TANSU_ENDPOINT="tcp://$TANSU_BOOTSTRAP"
}

# tansu_create_topic NAME PARTITIONS: tansu does not auto-create topics.
tansu_create_topic() {
    "$TANSU_BIN" topic create --broker "$TANSU_ENDPOINT" --partitions "$2" "$1" >>"$LOGDIR/tansu.log" 2>&1 ||
        die "could not create topic $1 on $TANSU_ENDPOINT; see $LOGDIR/tansu.log"
}
