//! Running one CNI plugin binary: environment, stdin, stdout, the error JSON, a timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The environment of one call (everything but the plugin's stdin).
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// Empty when the namespace is gone (DEL only).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS` text.
    pub args: &'a str,
    /// `CNI_PATH`: the bin dirs joined by `:`.
    pub path: &'a str,
}

/// The error a plugin prints on stdout when it fails (CNI spec "Error").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct PluginErrorJson {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl PluginErrorJson {
    /// Parses a failed plugin's stdout; `None` when it is not the error JSON.
    pub fn parse(stdout: &[u8]) -> Option<Self> {
        let e: PluginErrorJson = serde_json::from_slice(stdout).ok()?;
        (e.code != 0 || !e.msg.is_empty()).then_some(e)
    }
}

impl std::fmt::Display for PluginErrorJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (CNI error code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// Why a plugin call failed; the facade names the plugin and the command around it.
#[derive(Debug)]
pub enum PluginFailure {
    Spawn(std::io::Error),
    Timeout(Duration),
    Failed { status: std::process::ExitStatus, error: Option<PluginErrorJson>, output: String },
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginFailure::Spawn(e) => write!(f, "cannot run it: {e}"),
            PluginFailure::Timeout(t) => {
                write!(f, "did not finish within the plugin timeout of {}s; killed", t.as_secs())
            }
            PluginFailure::Failed { status, error: Some(e), .. } => write!(f, "{status}: {e}"),
            PluginFailure::Failed { status, error: None, output } if output.is_empty() => {
                write!(f, "{status}")
            }
            PluginFailure::Failed { status, error: None, output } => {
                write!(f, "{status}: {output}")
            }
        }
    }
}

/// Runs `binary` with the CNI environment of `inv` and `stdin`, and returns its stdout.
/// The plugin runs in a process group of its own: on timeout the whole group (the plugin
/// and anything it started) is killed.
pub async fn run(
    binary: &Path,
    inv: &Invocation<'_>,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, PluginFailure> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", inv.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(PluginFailure::Spawn)?;
    let pid = child.id();
    let input = stdin.to_vec();
    let mut pipe = child.stdin.take();
    let work = async move {
        if let Some(p) = pipe.as_mut() {
            // A plugin that exits without reading its stdin is judged by its exit status.
            let _ = p.write_all(&input).await;
        }
        drop(pipe);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(timeout, work).await {
        Ok(out) => out.map_err(PluginFailure::Spawn)?,
        Err(_) => {
            if let Some(pid) = pid {
                // The group: the plugin and whatever it forked (a shell's `sleep`).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(PluginFailure::Timeout(timeout));
        }
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let error = PluginErrorJson::parse(&output.stdout);
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str("stderr: ");
        text.push_str(stderr.trim());
    }
    text.truncate(2048);
    Err(PluginFailure::Failed { status: output.status, error, output: text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn inv() -> Invocation<'static> {
        Invocation {
            command: Command::Add,
            container_id: "pod1",
            netns: "/run/x",
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAME=a",
            path: "/opt/cni/bin:/usr/lib/cni",
        }
    }

    #[test]
    fn error_json() {
        let e = PluginErrorJson::parse(
            br#"{"cniVersion":"1.0.0","code":11,"msg":"no luck","details":"really"}"#,
        )
        .unwrap();
        assert_eq!(e.code, 11);
        assert_eq!(e.to_string(), "no luck (CNI error code 11): really");
        assert_eq!(PluginErrorJson::parse(b"garbage"), None);
        assert_eq!(PluginErrorJson::parse(b"{}"), None);
    }

    #[tokio::test]
    async fn environment_and_stdin_reach_the_plugin() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "echoer",
            r#"printf '{"env":"%s %s %s %s %s %s","stdin":' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"; cat; printf '}'"#,
        );
        let out = run(&p, &inv(), br#"{"a":1}"#, Duration::from_secs(10)).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["env"],
            "ADD pod1 /run/x eth0 IgnoreUnknown=1;K8S_POD_NAME=a /opt/cni/bin:/usr/lib/cni"
        );
        assert_eq!(v["stdin"]["a"], 1);
    }

    #[tokio::test]
    async fn failure_carries_the_error_json() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "failer",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"x"}'; echo oops >&2; exit 1"#,
        );
        let err = run(&p, &inv(), b"{}", Duration::from_secs(10)).await.unwrap_err();
        match &err {
            PluginFailure::Failed { error: Some(e), output, .. } => {
                assert_eq!(e.code, 7);
                assert!(output.contains("stderr: oops"), "{output}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("bad config (CNI error code 7)"), "{err}");
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let d = tempfile::tempdir().unwrap();
        let marker = d.path().join("pid");
        let p = script(
            d.path(),
            "sleeper",
            &format!("sleep 30 & echo $! > {}; wait", marker.display()),
        );
        let started = std::time::Instant::now();
        let err = run(&p, &inv(), b"{}", Duration::from_millis(500)).await.unwrap_err();
        assert!(matches!(err, PluginFailure::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        // The shell's child is gone too (killed, then reaped by init or a zombie briefly).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie_or_gone = state.is_empty()
                || state.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z');
            if zombie_or_gone {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "sleep {pid} outlived the timeout");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
