//! Running external scripts the way keepalived does: tracked `vrrp_script`
//! checks and `notify_*` hooks. Commands are split into words (double quotes
//! group), run without a shell, as the configured user, with a timeout; with
//! script security on, a script a non-root user could modify is refused.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use thiserror::Error;

use crate::sys::users::{lookup_group, lookup_user};

#[derive(Debug, Error)]
pub enum ScriptError {
    #[error("empty command")]
    Empty,
    #[error("{0}: not found in PATH")]
    NotFound(String),
    #[error("{path}: refused by script security: {why}")]
    Insecure { path: PathBuf, why: String },
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("{command}: could not start")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command}: timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

/// Splits a command line into its argv exactly as keepalived does (both
/// quote kinds group, backslash escapes: [`crate::config::split_command`]).
/// A line that cannot be split gives no words (and so "empty command"):
/// both front-ends refuse such a script before anything runs.
pub fn split_command(command: &str) -> Vec<String> {
    crate::config::split_command(command).unwrap_or_default()
}

/// Who scripts run as, and whether they must be root-controlled.
#[derive(Clone, Debug, Default)]
pub struct ScriptPolicy {
    pub security: bool,
    pub uid: u32,
    pub gid: u32,
}

impl ScriptPolicy {
    /// Resolves `script_user` / `script_group` (root when unset).
    pub fn new(
        security: bool,
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Self, ScriptError> {
        let (uid, mut gid) = match user {
            None => (0, 0),
            Some(name) => lookup_user(name).ok_or_else(|| ScriptError::UnknownUser(name.into()))?,
        };
        if let Some(name) = group {
            gid = lookup_group(name).ok_or_else(|| ScriptError::UnknownGroup(name.into()))?;
        }
        Ok(Self { security, uid, gid })
    }
}

/// Finds `program` as a shell would (a path, or a name searched in PATH).
pub fn resolve(program: &str) -> Result<PathBuf, ScriptError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| ScriptError::NotFound(program.into()))
}

/// keepalived's script security: the script and every directory above it
/// must be owned by root and not writable by group or others. The path as
/// written is checked (not where symlinks lead), so Debian's `pidof ->
/// killall5` link does not trip it.
pub fn check_secure(path: &Path) -> Result<(), ScriptError> {
    let insecure = |why: String| ScriptError::Insecure {
        path: path.to_owned(),
        why,
    };
    let mut current = Some(path);
    while let Some(p) = current {
        let meta =
            std::fs::symlink_metadata(p).map_err(|e| insecure(format!("{}: {e}", p.display())))?;
        let writable_by_others = if meta.file_type().is_symlink() {
            false
        } else {
            meta.mode() & 0o022 != 0 && !(meta.is_dir() && meta.mode() & 0o1000 != 0 && p != path)
        };
        if meta.uid() != 0 {
            return Err(insecure(format!("{} is not owned by root", p.display())));
        }
        if writable_by_others {
            return Err(insecure(format!(
                "{} is writable by non-root users",
                p.display()
            )));
        }
        current = p.parent().filter(|parent| !parent.as_os_str().is_empty());
    }
    Ok(())
}

/// Starts `program` with `argv` as `policy` says (killed when the handle
/// drops). Blocks: call from the blocking pool, in the runtime's context.
pub fn spawn(
    program: &str,
    argv: &[String],
    policy: &ScriptPolicy,
    command: &str,
) -> Result<tokio::process::Child, ScriptError> {
    let path = resolve(program)?;
    if policy.security {
        check_secure(&path)?;
    }
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // The agent's notification socket (systemd's `$NOTIFY_SOCKET`,
        // which ops::systemd sends through) is not the script's to use.
        // Spelled out here: ops imports health, not the reverse.
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true);
    if policy.uid != 0 || policy.gid != 0 {
        cmd.uid(policy.uid).gid(policy.gid);
    }
    cmd.spawn().map_err(|source| ScriptError::Spawn {
        command: command.to_owned(),
        source,
    })
}

/// Runs `command` and reports whether it exited 0, killing it after `timeout`.
pub async fn run(
    command: &str,
    extra_args: &[String],
    policy: &ScriptPolicy,
    timeout: Duration,
) -> Result<bool, ScriptError> {
    let words = split_command(command);
    let (program, args) = words.split_first().ok_or(ScriptError::Empty)?;
    let mut argv: Vec<String> = args.to_vec();
    argv.extend_from_slice(extra_args);
    let (program, policy, owned_command) = (program.clone(), policy.clone(), command.to_owned());
    // Finding the program, script security's checks (a stat per directory
    // up to /) and spawning (which blocks the calling thread until the
    // child has exec'd: milliseconds on a loaded machine) all run on the
    // blocking pool. The daemon runs on one runtime thread, so doing them
    // there would hold up adverts and the floating-IP requests of the very
    // failover a notify script reports.
    let spawned =
        tokio::task::spawn_blocking(move || spawn(&program, &argv, &policy, &owned_command)).await;
    let mut child = match spawned {
        Ok(result) => result?,
        Err(join) => {
            return Err(ScriptError::Spawn {
                command: command.to_owned(),
                source: std::io::Error::other(join.to_string()),
            });
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status.success()),
        Ok(Err(source)) => Err(ScriptError::Spawn {
            command: command.to_owned(),
            source,
        }),
        Err(_) => {
            let _ = child.kill().await;
            Err(ScriptError::Timeout {
                command: command.to_owned(),
                timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_like_keepalived() {
        assert_eq!(split_command("pidof haproxy"), ["pidof", "haproxy"]);
        assert_eq!(
            split_command(r#"/etc/k/notify.sh "two words"  x"#),
            ["/etc/k/notify.sh", "two words", "x"]
        );
        assert_eq!(
            split_command(r#""/path with space/s.sh""#),
            ["/path with space/s.sh"]
        );
        assert_eq!(
            split_command("sh -c 'killall -0 haproxy'"),
            ["sh", "-c", "killall -0 haproxy"]
        );
        assert!(split_command("   ").is_empty());
        assert!(split_command("sh -c 'unterminated").is_empty());
    }

    #[test]
    fn script_security_refuses_writable_scripts() {
        let dir = std::env::temp_dir().join(format!("lbha-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            assert!(check_secure(&script).is_ok(), "{:?}", check_secure(&script));
        }
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_secure(&script),
            Err(ScriptError::Insecure { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn runs_with_exit_status_and_timeout() {
        let policy = ScriptPolicy::default();
        assert!(
            run("true", &[], &policy, Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            !run("false", &[], &policy, Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            run("sh -c \"exit 3\"", &[], &policy, Duration::from_secs(5))
                .await
                .is_ok_and(|ok| !ok)
        );
        assert!(matches!(
            run("sleep 5", &[], &policy, Duration::from_millis(100)).await,
            Err(ScriptError::Timeout { .. })
        ));
        assert!(matches!(
            run("no-such-program-lbha", &[], &policy, Duration::from_secs(1)).await,
            Err(ScriptError::NotFound(_))
        ));
    }
}
