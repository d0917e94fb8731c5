//! Finding files: globs and exclusions, identity by device + inode, fingerprints that tell a
//! file that was truncated or replaced from the one we were reading, and the searches that find
//! a rotated file again (by inode) or the copy `copytruncate` made (by fingerprint).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::event::{Map, Value};

/// A file's identity: device and inode. Names change on rotation; this does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Bytes remembered from just before a read position.
pub const FP_LEN: usize = 64;

/// The (up to) [`FP_LEN`] bytes just before an offset. Finding them again at the same place
/// proves the file still holds what was read; not finding them means it was truncated or
/// rewritten (copytruncate, even when it grew back past the offset before we looked).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    buf: [u8; FP_LEN],
    len: u8,
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Fingerprint({:?})",
            String::from_utf8_lossy(self.bytes())
        )
    }
}

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint {
            buf: [0; FP_LEN],
            len: 0,
        }
    }
}

impl Fingerprint {
    /// The last [`FP_LEN`] bytes of `before` (all of them when shorter).
    pub fn from_tail(before: &[u8]) -> Fingerprint {
        let take = before.len().min(FP_LEN);
        let mut fp = Fingerprint::default();
        fp.buf[..take].copy_from_slice(&before[before.len() - take..]);
        fp.len = take as u8;
        fp
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A file a scan found.
pub struct Found {
    pub path: PathBuf,
    pub id: FileId,
    pub size: u64,
    /// When it was created (its modification time where the file system keeps no birth time).
    pub born: std::time::SystemTime,
}

/// What the configured globs matched in one scan.
#[derive(Default)]
pub struct ScanResult {
    /// Regular files, in glob order, each path once.
    pub files: Vec<Found>,
    /// Paths (or patterns) that could not be read, with the reason.
    pub problems: Vec<(String, String)>,
}

/// Expands the globs, drops excluded paths, and stats what is left (following symlinks, as
/// `/var/log/containers/*.log` are links into `/var/log/pods`).
pub fn scan(include: &[glob::Pattern], exclude: &[glob::Pattern]) -> ScanResult {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut out = ScanResult::default();
    let mut seen = std::collections::HashSet::new();
    for pattern in include {
        let paths = match glob::glob_with(pattern.as_str(), options) {
            Ok(p) => p,
            Err(e) => {
                out.problems
                    .push((pattern.as_str().to_string(), e.to_string()));
                continue;
            }
        };
        for entry in paths {
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    out.problems
                        .push((e.path().display().to_string(), e.error().to_string()));
                    continue;
                }
            };
            if is_excluded(&path, exclude) || !seen.insert(path.clone()) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => out.files.push(Found {
                    id: FileId::of(&meta),
                    size: meta.len(),
                    born: meta
                        .created()
                        .or_else(|_| meta.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    path,
                }),
                Ok(_) => {}
                Err(e) => out
                    .problems
                    .push((path.display().to_string(), e.to_string())),
            }
        }
    }
    out
}

/// `exclude_path` patterns match the whole path, `*` crossing `/` (Fluent Bit uses fnmatch
/// without FNM_PATHNAME): `*.gz` excludes every compressed file.
pub fn is_excluded(path: &Path, exclude: &[glob::Pattern]) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    exclude.iter().any(|p| p.matches_path_with(path, options))
}

/// Entries of a directory looked at when searching it (a bound for huge directories).
const MAX_SEARCH: usize = 10_000;

/// Finds the file with identity `id` in `dir` (a rotated file renamed next to its old name).
pub fn find_by_id(dir: &Path, id: FileId) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    // `DirEntry::ino` is not used: on overlayfs it may differ from the inode `stat` reports.
    for entry in entries.take(MAX_SEARCH).flatten() {
        let path = entry.path();
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.is_file() && FileId::of(&meta) == id {
                return Some(path);
            }
        }
    }
    None
}

/// Finds the copy `copytruncate` made of a file we had read up to `offset`: another regular
/// file in `dir`, at least `offset` long, holding `fp` just before `offset`. The most recently
/// modified one wins. Only meaningful with a non-empty fingerprint.
pub fn find_copy(
    dir: &Path,
    not: FileId,
    offset: u64,
    fp: &Fingerprint,
) -> Option<(PathBuf, File)> {
    if fp.is_empty() || offset < fp.len() as u64 {
        return None;
    }
    let mut best: Option<(std::time::SystemTime, PathBuf, File)> = None;
    for entry in std::fs::read_dir(dir).ok()?.take(MAX_SEARCH).flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || FileId::of(&meta) == not || meta.len() < offset {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let mut probe = [0u8; FP_LEN];
        let probe = &mut probe[..fp.len()];
        if file.read_exact_at(probe, offset - fp.len() as u64).is_err() || probe != fp.bytes() {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(m, _, _)| modified > *m) {
            best = Some((modified, path, file));
        }
    }
    best.map(|(_, p, f)| (p, f))
}

/// The tag of a file: each `*` in `template` becomes the path with `/` turned into `.` and
/// without the leading one (`kube.*` + `/var/log/containers/a.log` ->
/// `kube.var.log.containers.a.log`), as Fluent Bit does.
pub fn expand_tag(template: &str, path: &Path) -> String {
    if !template.contains('*') {
        return template.to_string();
    }
    let text = path.to_string_lossy();
    let dotted = text.trim_start_matches('/').replace('/', ".");
    template.replace('*', &dotted)
}

/// Kubernetes metadata from a container log file name
/// `<pod>_<namespace>_<container>-<64 hex container id>.log` (the kubelet's
/// `/var/log/containers` naming): `{pod_name, namespace_name, container_name, container_id}`.
///
/// Also `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log` (what the
/// `/var/log/containers` links point to): `{namespace_name, pod_name, pod_id, container_name}`.
pub fn kubernetes_metadata(path: &Path) -> Option<Map> {
    container_log_name(path).or_else(|| pod_log_path(path))
}

fn container_log_name(path: &Path) -> Option<Map> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if [pod, namespace, container].iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut m = Map::with_capacity(4);
    for (k, v) in [
        ("pod_name", pod),
        ("namespace_name", namespace),
        ("container_name", container),
        ("container_id", id),
    ] {
        m.push(Bytes::from_static(k.as_bytes()), Value::from(v));
    }
    Some(m)
}

fn pod_log_path(path: &Path) -> Option<Map> {
    let name = path.file_name()?.to_str()?;
    let restart = name.strip_suffix(".log")?;
    if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let uuid_like = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if namespace.is_empty() || pod.is_empty() || container.is_empty() || !uuid_like {
        return None;
    }
    let mut m = Map::with_capacity(4);
    for (k, v) in [
        ("namespace_name", namespace),
        ("pod_name", pod),
        ("pod_id", uid),
        ("container_name", container),
    ] {
        m.push(Bytes::from_static(k.as_bytes()), Value::from(v));
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_expansion_like_fluent_bit() {
        let p = Path::new("/var/log/containers/a_b_c-1.log");
        assert_eq!(
            expand_tag("kube.*", p),
            "kube.var.log.containers.a_b_c-1.log"
        );
        assert_eq!(expand_tag("app", p), "app");
    }

    #[test]
    fn kubernetes_fields_from_file_name() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let p = PathBuf::from(format!(
            "/var/log/containers/web-7d9f8-abcde_prod_nginx-proxy-{id}.log"
        ));
        let m = kubernetes_metadata(&p).unwrap();
        let get = |k: &[u8]| m.get(k).unwrap().to_text();
        assert_eq!(get(b"pod_name"), "web-7d9f8-abcde");
        assert_eq!(get(b"namespace_name"), "prod");
        assert_eq!(get(b"container_name"), "nginx-proxy");
        assert_eq!(get(b"container_id"), id);
        assert!(kubernetes_metadata(Path::new("/var/log/app.log")).is_none());
        let m = kubernetes_metadata(Path::new(
            "/var/log/pods/prod_web-7d9f8-abcde_1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/nginx/0.log",
        ))
        .unwrap();
        let get = |k: &[u8]| m.get(k).unwrap().to_text();
        assert_eq!(get(b"namespace_name"), "prod");
        assert_eq!(get(b"pod_name"), "web-7d9f8-abcde");
        assert_eq!(get(b"pod_id"), "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718");
        assert_eq!(get(b"container_name"), "nginx");
        assert!(kubernetes_metadata(Path::new("/var/log/pods/x/nginx/0.log")).is_none());
        assert!(kubernetes_metadata(Path::new("/x/a_b_c-1234.log")).is_none());
    }

    #[test]
    fn fingerprint_keeps_the_last_bytes() {
        let fp = Fingerprint::from_tail(b"abc");
        assert_eq!(fp.bytes(), b"abc");
        let long: Vec<u8> = (0..100u8).collect();
        let fp = Fingerprint::from_tail(&long);
        assert_eq!(fp.len(), FP_LEN);
        assert_eq!(fp.bytes(), &long[36..]);
    }

    #[test]
    fn exclusion_crosses_slashes() {
        let ex = vec![glob::Pattern::new("*.gz").unwrap()];
        assert!(is_excluded(Path::new("/var/log/a/b.log.gz"), &ex));
        assert!(!is_excluded(Path::new("/var/log/a/b.log"), &ex));
    }
}
