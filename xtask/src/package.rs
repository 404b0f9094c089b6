//! The .deb and the .rpm `cargo xtask dist` builds around the static
//! binary, with dpkg-deb and rpmbuild (setup installs `rpm`; dpkg-deb is
//! part of dpkg), and the checks of what they hold.
//!
//! Both install the same things (the .rpm in its distribution's places):
//!
//! | file | .deb | .rpm |
//! | --- | --- | --- |
//! | the binary | `/usr/bin/lbha-agent` | the same |
//! | the unit | `/lib/systemd/system/lbha-agent.service` | `/usr/lib/systemd/system/` |
//! | the agent's command line (conffile) | `/etc/default/lbha-agent` | `/etc/sysconfig/lbha-agent` |
//! | the configuration (conffile, the example until edited) | `/etc/lbha/lbha.toml` | the same |
//! | README, examples, the Grafana dashboard, the alert rules | `/usr/share/doc/lbha-agent/` | the same |
//!
//! The maintainer scripts (`dist/deb/`, and the scriptlets of
//! `dist/rpm/lbha-agent.spec`) run `systemctl daemon-reload` when systemd
//! runs, restart a running agent on an upgrade, and on removal stop the
//! agent and `lbha-agent detach` its XDP program. Neither enables the unit.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    dist::{copy, examples, source_date_epoch},
    run, workspace_root,
};

pub const NAME: &str = "lbha-agent";
pub const DOC_DIR: &str = "/usr/share/doc/lbha-agent";

/// What operators look at, below `dist/` and shipped below the doc
/// directory: the Grafana dashboard and the Prometheus alert rules.
pub const MONITORING: [&str; 2] = ["grafana/lbha.json", "prometheus/lbha.rules.yml"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Deb,
    Rpm,
}

impl Kind {
    pub fn unit_path(self) -> &'static str {
        match self {
            Kind::Deb => "/lib/systemd/system/lbha-agent.service",
            Kind::Rpm => "/usr/lib/systemd/system/lbha-agent.service",
        }
    }

    /// Where the agent's environment (`LBHA_ARGS`) lives.
    pub fn defaults_path(self) -> &'static str {
        match self {
            Kind::Deb => "/etc/default/lbha-agent",
            Kind::Rpm => "/etc/sysconfig/lbha-agent",
        }
    }

    /// The configuration files the package never overwrites once edited.
    pub fn conffiles(self) -> [&'static str; 2] {
        [self.defaults_path(), "/etc/lbha/lbha.toml"]
    }
}

/// `from` in `text` replaced by `to`, failing when `from` is not there (so
/// a change to the unit or the defaults file cannot silently break it).
fn replace_all(text: &str, from: &str, to: &str, what: &str) -> Result<String> {
    if !text.contains(from) {
        bail!("{what} no longer contains {from:?}");
    }
    Ok(text.replace(from, to))
}

/// The unit as a package installs it: the binary in /usr/bin, the README
/// in the package's doc directory, the environment file where the
/// distribution keeps them.
pub fn packaged_unit(kind: Kind) -> Result<String> {
    let path = workspace_root().join("dist/lbha-agent.service");
    let unit = std::fs::read_to_string(&path)?;
    let what = path.display().to_string();
    let unit = replace_all(
        &unit,
        "/usr/local/bin/lbha-agent",
        "/usr/bin/lbha-agent",
        &what,
    )?;
    let unit = replace_all(&unit, "/usr/local/share/doc/lbha", DOC_DIR, &what)?;
    match kind {
        Kind::Deb => Ok(unit),
        Kind::Rpm => replace_all(
            &unit,
            "/etc/default/lbha-agent",
            Kind::Rpm.defaults_path(),
            &what,
        ),
    }
}

/// The environment file as a package installs it; `extra` is appended (the
/// upgrade test's second version changes it, as a real upgrade may).
fn packaged_defaults(kind: Kind, extra: &str) -> Result<String> {
    let path = workspace_root().join("dist/lbha-agent.default");
    let text = std::fs::read_to_string(&path)?;
    let text = match kind {
        Kind::Deb => text,
        Kind::Rpm => replace_all(
            &text,
            "/etc/default/lbha-agent",
            Kind::Rpm.defaults_path(),
            &path.display().to_string(),
        )?,
    };
    Ok(format!("{text}{extra}"))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// `stage` below `dir`, without its leading `/`.
fn under(dir: &Path, path: &str) -> PathBuf {
    dir.join(path.trim_start_matches('/'))
}

/// The installed tree of a package below `stage`.
fn stage_tree(binary: &Path, stage: &Path, kind: Kind, defaults_extra: &str) -> Result<()> {
    let root = workspace_root();
    copy(binary, &under(stage, "/usr/bin/lbha-agent"), 0o755)?;
    write(
        &under(stage, kind.unit_path()),
        &packaged_unit(kind)?,
        0o644,
    )?;
    write(
        &under(stage, kind.defaults_path()),
        &packaged_defaults(kind, defaults_extra)?,
        0o600,
    )?;
    copy(
        &root.join("examples/lbha.toml"),
        &under(stage, "/etc/lbha/lbha.toml"),
        0o640,
    )?;
    // Configuration may hold auth_pass secrets or a token: root only.
    set_mode(&under(stage, "/etc/lbha"), 0o750)?;
    let doc = under(stage, DOC_DIR);
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for example in examples()? {
        let name = example.file_name().context("example without a name")?;
        copy(&example, &doc.join("examples").join(name), 0o644)?;
    }
    for file in MONITORING {
        copy(&root.join("dist").join(file), &doc.join(file), 0o644)?;
    }
    if kind == Kind::Deb {
        write(
            &doc.join("copyright"),
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: lbha\n\n\
             Files: *\n\
             License: MIT or Apache-2.0\n",
            0o644,
        )?;
    }
    Ok(())
}

/// Every file below `dir` (not directories), as absolute paths inside it.
pub fn tree_files(dir: &Path) -> Result<BTreeSet<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base)?;
                out.insert(format!("/{}", rel.display()));
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// The files a package of `kind` installs (what its checks compare with).
pub fn expected_files(kind: Kind) -> Result<BTreeSet<String>> {
    let mut files: BTreeSet<String> = [
        "/usr/bin/lbha-agent",
        kind.unit_path(),
        kind.defaults_path(),
        "/etc/lbha/lbha.toml",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    files.insert(format!("{DOC_DIR}/README.md"));
    for file in MONITORING {
        files.insert(format!("{DOC_DIR}/{file}"));
    }
    if kind == Kind::Deb {
        files.insert(format!("{DOC_DIR}/copyright"));
    }
    for example in examples()? {
        let name = example.file_name().context("example without a name")?;
        files.insert(format!("{DOC_DIR}/examples/{}", name.to_string_lossy()));
    }
    Ok(files)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn size_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for file in tree_files(dir)? {
        total += std::fs::metadata(under(dir, &file))?.len().div_ceil(1024);
    }
    Ok(total)
}

/// The .deb of `version` in `out_dir`. `defaults_extra` is appended to
/// /etc/default/lbha-agent (empty for the real package).
pub fn build_deb_with(
    binary: &Path,
    version: &str,
    out_dir: &Path,
    defaults_extra: &str,
) -> Result<PathBuf> {
    let tmp = lbha_harness::temp_dir("deb")?;
    let stage = tmp.path().join("root");
    stage_tree(binary, &stage, Kind::Deb, defaults_extra)?;
    let installed_size = size_kib(&stage)?;
    let md5sums = output(
        Command::new("sh")
            .arg("-c")
            .arg("find usr lib etc -type f ! -path 'etc/*' -print0 | sort -z | xargs -0 md5sum")
            .current_dir(&stage),
    )?;
    let control = stage.join("DEBIAN");
    std::fs::create_dir_all(&control)?;
    write(
        &control.join("control"),
        &format!(
            "Package: {NAME}\n\
             Version: {version}\n\
             Architecture: amd64\n\
             Maintainer: lbha developers <lbha@example.org>\n\
             Installed-Size: {installed_size}\n\
             Section: net\n\
             Priority: optional\n\
             Suggests: haproxy\n\
             Description: VRRP + HAProxy liveness + DigitalOcean floating IP failover\n \
             lbha-agent replaces keepalived + `pidof haproxy` + master.sh for HAProxy\n \
             pairs behind a DigitalOcean floating (reserved) IP: VRRP (v2/v3, wire\n \
             compatible with keepalived) with an XDP receive path, HAProxy liveness\n \
             through procfs and pidfds, and the floating IP assignment, in one\n \
             daemon. The binary is static: it needs no library from the system.\n"
        ),
        0o644,
    )?;
    write(
        &control.join("conffiles"),
        &Kind::Deb.conffiles().map(|f| format!("{f}\n")).concat(),
        0o644,
    )?;
    write(&control.join("md5sums"), &md5sums, 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(
            &workspace_root().join("dist/deb").join(script),
            &control.join(script),
            0o755,
        )?;
    }
    std::fs::create_dir_all(out_dir)?;
    let deb = out_dir.join(format!("{NAME}_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&stage)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", source_date_epoch()))?;
    Ok(deb)
}

pub fn build_deb(binary: &Path, version: &str, out_dir: &Path) -> Result<PathBuf> {
    build_deb_with(binary, version, out_dir, "")
}

/// The .rpm of `version` in `out_dir`.
pub fn build_rpm(binary: &Path, version: &str, out_dir: &Path) -> Result<PathBuf> {
    let tmp = lbha_harness::temp_dir("rpm")?;
    let stage = tmp.path().join("root");
    stage_tree(binary, &stage, Kind::Rpm, "")?;
    let epoch = source_date_epoch();
    let define = |cmd: &mut Command, name: &str, value: &str| {
        cmd.arg("--define").arg(format!("{name} {value}"));
    };
    let mut rpmbuild = Command::new("rpmbuild");
    rpmbuild.arg("-bb").arg("--quiet");
    define(
        &mut rpmbuild,
        "_topdir",
        &tmp.path().join("rpmbuild").display().to_string(),
    );
    define(&mut rpmbuild, "_rpmdir", &out_dir.display().to_string());
    define(
        &mut rpmbuild,
        "_build_name_fmt",
        "%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
    );
    define(&mut rpmbuild, "stage", &stage.display().to_string());
    define(&mut rpmbuild, "lbha_version", version);
    // xz rather than rpm 4.18's zstd default: older RPM distributions read it.
    define(&mut rpmbuild, "_binary_payload", "w9.xzdio");
    define(&mut rpmbuild, "source_date_epoch_from_changelog", "0");
    define(&mut rpmbuild, "use_source_date_epoch_as_buildtime", "1");
    define(&mut rpmbuild, "clamp_mtime_to_source_date_epoch", "1");
    rpmbuild
        .arg(workspace_root().join("dist/rpm/lbha-agent.spec"))
        .env("SOURCE_DATE_EPOCH", &epoch);
    std::fs::create_dir_all(out_dir)?;
    run(&mut rpmbuild)?;
    let rpm = out_dir.join(format!("{NAME}-{version}-1.x86_64.rpm"));
    if !rpm.is_file() {
        bail!("rpmbuild did not write {}", rpm.display());
    }
    Ok(rpm)
}

/// Syntax-checks a shell script with `sh -n`.
fn check_shell(name: &str, script: &str) -> Result<()> {
    let tmp = lbha_harness::temp_dir("sh-check")?;
    let path = tmp.path().join("script");
    std::fs::write(&path, script)?;
    output(Command::new("sh").arg("-n").arg(&path))
        .with_context(|| format!("{name} is not valid sh"))?;
    Ok(())
}

/// Fails unless every one of `needles` is in `haystack` (named `what`).
fn require_all(what: &str, haystack: &str, needles: &[&str]) -> Result<()> {
    for needle in needles {
        if !haystack.contains(needle) {
            bail!("{what} lacks {needle:?}:\n{haystack}");
        }
    }
    Ok(())
}

/// What the .deb holds: its control fields, its files and their modes, the
/// conffiles, and maintainer scripts that are valid sh and do what they
/// must (daemon-reload, stop and detach on removal).
pub fn check_deb(deb: &Path, version: &str) -> Result<()> {
    let field = |name: &str| output(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
    if field("Package")?.trim() != NAME || field("Version")?.trim() != version {
        bail!("{}: wrong Package or Version", deb.display());
    }
    if !field("Depends")?.trim().is_empty() || !field("Pre-Depends")?.trim().is_empty() {
        bail!(
            "{}: a static binary needs no dependencies, yet the package has some",
            deb.display()
        );
    }
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let mut files = BTreeSet::new();
    for line in contents.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(mode), Some(owner), Some(path)) = (words.first(), words.get(1), words.last())
        else {
            continue;
        };
        if *owner != "root/root" {
            bail!("{}: {path} is owned by {owner}", deb.display());
        }
        if mode.starts_with('-') {
            let path = path.trim_start_matches('.').to_owned();
            let want = match path.as_str() {
                "/usr/bin/lbha-agent" => "-rwxr-xr-x",
                "/etc/default/lbha-agent" => "-rw-------",
                "/etc/lbha/lbha.toml" => "-rw-r-----",
                _ => "-rw-r--r--",
            };
            if *mode != want {
                bail!("{}: {path} has mode {mode}, not {want}", deb.display());
            }
            files.insert(path);
        } else if path.trim_end_matches('/') == "./etc/lbha" && *mode != "drwxr-x---" {
            bail!(
                "{}: /etc/lbha has mode {mode}, not drwxr-x---",
                deb.display()
            );
        }
    }
    let expected = expected_files(Kind::Deb)?;
    if files != expected {
        bail!(
            "{} holds {:?}, expected {:?}",
            deb.display(),
            files.symmetric_difference(&expected).collect::<Vec<_>>(),
            "nothing else"
        );
    }
    let tmp = lbha_harness::temp_dir("deb-control")?;
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(tmp.path()))?;
    let conffiles = std::fs::read_to_string(tmp.path().join("conffiles"))?;
    let listed: BTreeSet<&str> = conffiles.lines().collect();
    if listed != Kind::Deb.conffiles().into_iter().collect() {
        bail!("{}: conffiles are {conffiles:?}", deb.display());
    }
    let script = |name: &str| -> Result<String> {
        let text = std::fs::read_to_string(tmp.path().join(name))?;
        check_shell(name, &text)?;
        Ok(text)
    };
    require_all(
        "postinst",
        &script("postinst")?,
        &["systemctl daemon-reload"],
    )?;
    require_all(
        "prerm",
        &script("prerm")?,
        &["systemctl stop lbha-agent.service", "lbha-agent detach"],
    )?;
    require_all("postrm", &script("postrm")?, &["systemctl daemon-reload"])?;
    println!(
        "dist: {} checked ({} files, conffiles {}, maintainer scripts)",
        deb.display(),
        files.len(),
        Kind::Deb.conffiles().join(" ")
    );
    Ok(())
}

/// The scriptlets `rpm -qp --scripts` prints, by name (`postinstall`, ...).
fn rpm_scriptlets(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some((name, _)) = line.split_once(" scriptlet (using ") {
            out.push((name.to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// What the .rpm holds, through `rpm -qp`: its files (`-l`) with their
/// modes and config flags, no automatic requirement on a libc, and
/// scriptlets (`--scripts`) that are valid sh and do what they must.
pub fn check_rpm(rpm: &Path) -> Result<()> {
    let query = |args: &[&str]| output(Command::new("rpm").arg("-qp").args(args).arg(rpm));
    let listed: BTreeSet<String> = query(&["-l"])?
        .lines()
        .map(str::to_owned)
        .filter(|path| !path.is_empty())
        .collect();
    // -l lists directories that are %files entries too.
    let mut expected = expected_files(Kind::Rpm)?;
    expected.insert("/etc/lbha".into());
    expected.insert(DOC_DIR.into());
    expected.insert(format!("{DOC_DIR}/examples"));
    for file in MONITORING {
        if let Some((dir, _)) = file.split_once('/') {
            expected.insert(format!("{DOC_DIR}/{dir}"));
        }
    }
    if listed != expected {
        bail!(
            "rpm -qpl {}: differs from what is expected in {:?}",
            rpm.display(),
            listed.symmetric_difference(&expected).collect::<Vec<_>>()
        );
    }
    let flags = query(&[
        "--qf",
        "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
    ])?;
    for (path, mode, flag) in [
        ("/usr/bin/lbha-agent", "-rwxr-xr-x", ""),
        ("/etc/sysconfig/lbha-agent", "-rw-------", "cn"),
        ("/etc/lbha/lbha.toml", "-rw-r-----", "cn"),
        ("/etc/lbha", "drwxr-x---", ""),
        (Kind::Rpm.unit_path(), "-rw-r--r--", ""),
    ] {
        let line = flags
            .lines()
            .find(|line| line.ends_with(&format!(" {path}")))
            .with_context(|| format!("{path} is not in {}", rpm.display()))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (got_mode, got_flag) = match words.as_slice() {
            [mode, file] if file == &path => (*mode, ""),
            [mode, flag, _] => (*mode, *flag),
            _ => bail!("unexpected rpm query line {line:?}"),
        };
        if got_mode != mode || got_flag != flag {
            bail!(
                "{path} in {}: {line:?}, expected {mode} {flag:?}",
                rpm.display()
            );
        }
    }
    let requires = query(&["--requires"])?;
    if let Some(line) = requires
        .lines()
        .find(|line| !line.starts_with("rpmlib(") && line.trim() != "/bin/sh")
    {
        bail!(
            "{} requires {line:?}: a static binary needs nothing",
            rpm.display()
        );
    }
    let scripts = query(&["--scripts"])?;
    let scriptlets = rpm_scriptlets(&scripts);
    for (name, body) in &scriptlets {
        check_shell(&format!("the {name} scriptlet"), body)?;
    }
    let body = |name: &str| -> Result<&str> {
        scriptlets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, body)| body.as_str())
            .with_context(|| format!("{} has no {name} scriptlet:\n{scripts}", rpm.display()))
    };
    require_all("%post", body("postinstall")?, &["systemctl daemon-reload"])?;
    require_all(
        "%preun",
        body("preuninstall")?,
        &[
            "[ \"$1\" -eq 0 ]",
            "systemctl stop lbha-agent.service",
            "lbha-agent detach",
        ],
    )?;
    require_all(
        "%postun",
        body("postuninstall")?,
        &["systemctl daemon-reload", "try-restart"],
    )?;
    println!(
        "dist: {} checked (rpm -qpl: {} entries, %config(noreplace) {}, scriptlets {})",
        rpm.display(),
        listed.len(),
        Kind::Rpm.conffiles().join(" "),
        scriptlets
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scriptlets_are_split_by_header() {
        let text = "postinstall scriptlet (using /bin/sh):\nA\nB\npreuninstall scriptlet (using /bin/sh):\nC\n";
        let parsed = rpm_scriptlets(text);
        assert_eq!(
            parsed,
            vec![
                ("postinstall".to_owned(), "A\nB\n".to_owned()),
                ("preuninstall".to_owned(), "C\n".to_owned())
            ]
        );
    }

    #[test]
    fn packaged_units_name_the_packaged_paths() {
        let deb = packaged_unit(Kind::Deb).unwrap();
        assert!(
            deb.contains("ExecStart=/usr/bin/lbha-agent $LBHA_ARGS"),
            "{deb}"
        );
        assert!(deb.contains("EnvironmentFile=-/etc/default/lbha-agent"));
        assert!(!deb.contains("/usr/local"));
        let rpm = packaged_unit(Kind::Rpm).unwrap();
        assert!(
            rpm.contains("EnvironmentFile=-/etc/sysconfig/lbha-agent"),
            "{rpm}"
        );
        assert!(!rpm.contains("/etc/default/"));
    }

    #[test]
    fn a_missing_replacement_is_an_error() {
        assert!(replace_all("abc", "x", "y", "test").is_err());
        assert_eq!(replace_all("axc", "x", "y", "test").unwrap(), "ayc");
    }
}
