//! `cargo xtask dist`: the release tarball
//! `target/dist/lbha-<version>-<arch>-linux.tar.gz`, holding
//!
//! ```text
//! lbha-<version>-<arch>-linux/
//!   bin/lbha-agent                 release build (XDP program embedded)
//!   systemd/lbha-agent.service     dist/lbha-agent.service
//!   default/lbha-agent             dist/lbha-agent.default (/etc/default/lbha-agent)
//!   examples/                      examples/*.toml, examples/keepalived.conf
//!   README.md
//!   install.sh                     dist/install.sh (PREFIX=, DESTDIR=)
//! ```
//!
//! Afterwards it unpacks the tarball into a temporary directory and runs
//! `install.sh` with `DESTDIR` there, checking that every file lands where
//! it should.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, run, workspace_root};

/// lbha-agent's version, from `cargo metadata`.
fn agent_version() -> Result<String> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "lbha-agent")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("lbha-agent is not in cargo metadata")
}

/// The timestamp every file in the tarball gets: `SOURCE_DATE_EPOCH`, or the
/// last commit's time, so two builds of one commit differ only in the binary.
fn source_date_epoch(root: &Path) -> String {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch;
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|epoch| !epoch.is_empty())
        .unwrap_or_else(|| "0".into())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds the tarball and checks its install.sh.
pub fn dist() -> Result<()> {
    let root = workspace_root();
    run(cargo().args(["build", "--release", "-p", "lbha-agent"]))?;
    let version = agent_version()?;
    let name = format!("lbha-{version}-{}-linux", std::env::consts::ARCH);
    let out_dir = root.join("target/dist");
    let stage = out_dir.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }

    copy(
        &root.join("target/release/lbha-agent"),
        &stage.join("bin/lbha-agent"),
        0o755,
    )?;
    copy(
        &root.join("dist/lbha-agent.service"),
        &stage.join("systemd/lbha-agent.service"),
        0o644,
    )?;
    copy(
        &root.join("dist/lbha-agent.default"),
        &stage.join("default/lbha-agent"),
        0o644,
    )?;
    copy(
        &root.join("dist/install.sh"),
        &stage.join("install.sh"),
        0o755,
    )?;
    copy(&root.join("README.md"), &stage.join("README.md"), 0o644)?;
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    examples.retain(|path| {
        path.extension().is_some_and(|ext| ext == "toml")
            || path.file_name().is_some_and(|n| n == "keepalived.conf")
    });
    examples.sort();
    for example in &examples {
        let file_name = example.file_name().context("example without a name")?;
        copy(example, &stage.join("examples").join(file_name), 0o644)?;
    }

    let tarball = out_dir.join(format!("{name}.tar.gz"));
    let tar = out_dir.join(format!("{name}.tar"));
    let _ = std::fs::remove_file(&tarball);
    run(Command::new("tar")
        .current_dir(&out_dir)
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{}", source_date_epoch(&root)))
        .arg("-cf")
        .arg(&tar)
        .arg(&name))?;
    run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&tar))?;
    std::fs::remove_dir_all(&stage)?;

    run(Command::new("tar").arg("-tvzf").arg(&tarball))?;
    check_install(&tarball, &name)?;
    println!("dist: {}", tarball.display());
    Ok(())
}

/// Unpacks `tarball` into a temporary directory and runs its install.sh
/// with `DESTDIR` and `PREFIX` pointing there; checks the installed tree,
/// and that a second run keeps the configuration files.
fn check_install(tarball: &Path, name: &str) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("lbha-dist-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(&tmp))?;
        let dest = tmp.join("root");
        let install = |prefix: &str| -> Result<String> {
            let out = Command::new("sh")
                .arg(tmp.join(name).join("install.sh"))
                .env("DESTDIR", &dest)
                .env("PREFIX", prefix)
                .output()
                .context("running install.sh")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() {
                bail!(
                    "install.sh failed: {}\n{text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(text)
        };
        install("/opt/lbha")?;
        let expected = [
            "opt/lbha/bin/lbha-agent",
            "opt/lbha/share/doc/lbha/README.md",
            "etc/systemd/system/lbha-agent.service",
            "etc/default/lbha-agent",
            "etc/lbha/lbha.toml",
            "etc/lbha/examples/lbha.toml",
            "etc/lbha/examples/keepalived.conf",
        ];
        for path in expected {
            if !dest.join(path).is_file() {
                bail!("install.sh did not install {path}");
            }
        }
        let unit = std::fs::read_to_string(dest.join("etc/systemd/system/lbha-agent.service"))?;
        if !unit.contains("ExecStart=/opt/lbha/bin/lbha-agent $LBHA_ARGS") {
            bail!("the installed unit does not name the PREFIX binary");
        }
        // A second run replaces the binary but keeps edited configuration.
        std::fs::write(dest.join("etc/lbha/lbha.toml"), "# edited\n")?;
        let second = install("/opt/lbha")?;
        if std::fs::read_to_string(dest.join("etc/lbha/lbha.toml"))? != "# edited\n"
            || !second.contains("kept existing /etc/lbha/lbha.toml")
        {
            bail!("install.sh overwrote /etc/lbha/lbha.toml");
        }
        println!("dist: install.sh checked (DESTDIR staging, PREFIX=/opt/lbha, configs kept)");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
