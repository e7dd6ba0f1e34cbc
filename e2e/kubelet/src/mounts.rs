//! The container's mount namespace: a shell script run by `unshare --mount` before `exec`ing the
//! container's command, that bind-mounts each volume at its mount path.
//!
//! Mount paths that do not exist on the machine are created inside an overlay of their nearest
//! existing ancestor (upper layer on a tmpfs private to the container), so the machine's own
//! directories are never modified. A mount path directly under `/` that does not exist cannot be
//! created that way and fails the container with a message saying so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One volume mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// POSIX shell single-quoting.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// The script, run as `sh -c SCRIPT sh SCRATCH ARGV0 ARGS...`: SCRATCH is an existing empty
/// directory of the run folder for the overlay layers; the script ends by `exec`ing ARGV0 ARGS.
pub fn script(mounts: &[BindMount], working_dir: Option<&str>) -> String {
    let mut s = String::from(
        r#"set -eu
scratch=$1; shift
mount -t tmpfs -o mode=0700 tmpfs "$scratch"
overlaid=""
n=0
# ensure_path TARGET dir|file: make TARGET exist without touching the machine's directories.
ensure_path() {
  t=$1
  [ -e "$t" ] && return 0
  a=$t
  while [ ! -e "$a" ]; do a=$(dirname "$a"); done
  a=$(readlink -f "$a")
  for o in $overlaid; do
    case "$a/" in "$o"/*) a="";; esac
  done
  if [ -n "$a" ]; then
    if [ "$a" = / ]; then
      echo "process kubelet: mount path $t needs a new directory under /, which it cannot create without modifying the machine" >&2
      exit 126
    fi
    n=$((n+1)); mkdir -p "$scratch/u$n" "$scratch/w$n"
    mount -t overlay overlay -o "lowerdir=$a,upperdir=$scratch/u$n,workdir=$scratch/w$n" "$a"
    overlaid="$overlaid $a"
  fi
  if [ "$2" = file ]; then mkdir -p "$(dirname "$t")"; touch "$t"; else mkdir -p "$t"; fi
}
"#,
    );
    for m in in_mount_order(mounts) {
        let kind = if m.source.is_dir() { "dir" } else { "file" };
        let _ = writeln!(s, "ensure_path {} {kind}", q(&m.target));
        let _ = writeln!(s, "mount --bind {} {}", q(&m.source), q(&m.target));
        if m.read_only {
            let _ = writeln!(s, "mount -o remount,bind,ro {}", q(&m.target));
        }
    }
    match working_dir.filter(|d| !d.is_empty()) {
        Some(dir) => {
            let _ = writeln!(s, "ensure_path {} dir", quote(dir));
            let _ = writeln!(s, "cd {}", quote(dir));
        }
        // An image without WORKDIR starts in /, not wherever the kubelet runs.
        None => s.push_str("cd /\n"),
    }
    s.push_str("argv0=$1; shift\nexec \"$argv0\" \"$@\"\n");
    s
}

/// The mounts in an order where none hides the source of a later one: a mount whose target
/// contains a volume's source (an emptyDir at `/tmp` while the run folder is under `/tmp`) goes
/// after the others, in its original order. The scratch directory lives beside the sources, so
/// it stays reachable for the overlays of the earlier ones too.
fn in_mount_order(mounts: &[BindMount]) -> Vec<&BindMount> {
    let covers = |m: &BindMount| mounts.iter().any(|o| o.source.starts_with(&m.target));
    let (mut first, last): (Vec<&BindMount>, Vec<&BindMount>) =
        mounts.iter().partition(|m| !covers(m));
    first.extend(last);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoting_survives_the_shell() {
        let tricky = "a b'c\"$d";
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(tricky)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), tricky);
    }

    #[test]
    fn a_mount_over_the_sources_goes_last() {
        let m = |source: &str, target: &str| BindMount {
            source: PathBuf::from(source),
            target: PathBuf::from(target),
            read_only: false,
        };
        let s = script(
            &[
                m("/tmp/run/pod/volumes/config", "/etc/a3s-power"),
                m("/tmp/run/pod/volumes/tmp", "/tmp"),
                m("/tmp/run/pod/volumes/model-key", "/run/a3s-power/keys"),
            ],
            None,
        );
        let at = |t: &str| s.find(&format!("mount --bind {}", quote(t))).unwrap();
        assert!(at("/tmp/run/pod/volumes/model-key") < at("/tmp/run/pod/volumes/tmp"));
        assert!(at("/tmp/run/pod/volumes/config") < at("/tmp/run/pod/volumes/model-key"));
    }

    #[test]
    fn script_binds_read_only_and_execs_argv() {
        let s = script(
            &[BindMount {
                source: PathBuf::from("/nonexistent/src"),
                target: PathBuf::from("/etc/a3s-power/config.hcl"),
                read_only: true,
            }],
            Some("/work"),
        );
        assert!(s.contains("ensure_path '/etc/a3s-power/config.hcl' file"));
        assert!(s.contains("mount --bind '/nonexistent/src' '/etc/a3s-power/config.hcl'"));
        assert!(s.contains("mount -o remount,bind,ro '/etc/a3s-power/config.hcl'"));
        assert!(s.contains("cd '/work'"));
        assert!(s.ends_with("exec \"$argv0\" \"$@\"\n"));
    }
}
