//! Exec, attach and port-forward through berthd's streaming server, with clients that
//! speak SPDY/3.1 and WebSocket as kubectl and crictl do.

use berth_integration::pods::{busybox, Node};
use berth_integration::streaming::{
    read_all, read_until, spdy_session, spdy_status, SpdyClient, WsClient,
};
use berth_proto::*;
use std::time::{Duration, Instant};

async fn exec_url(
    node: &Node,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    stderr: bool,
    tty: bool,
) -> String {
    node.berthd
        .runtime()
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdout: true,
            stderr,
            tty,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).replace('\0', " ").contains(needle))
        .count()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_and_websocket() {
    exec_sessions(Node::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_and_websocket_with_runc() {
    exec_sessions(Node::start_runc().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unused_token_expires() {
    let node = Node::start_with_config("[streaming]\ntoken_ttl_secs = 1\n").await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("expiry", logs.path()).await;
    let c = node.run(&pod, busybox("svc", &["sleep", "3600"])).await;
    let url = exec_url(&node, &c, &["true"], false, false, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(spdy_status(&url).await.unwrap(), 404);
    node.remove_pod_and_check(&pod).await;
}

async fn exec_sessions(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("stream", logs.path()).await;
    let c = node.run(&pod, busybox("svc", &["sleep", "3600"])).await;
    let berthd_fds = open_fds(node.berthd.pid().unwrap());
    let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];

    // SPDY, v4: output, error output and the exit code in a Status.
    let url = exec_url(&node, &c, &cmd, false, true, false).await;
    let got = spdy_session(&url, None, true, true).await.unwrap();
    assert_eq!((got.stdout.as_str(), got.stderr.as_str()), ("out\n", "err\n"), "{got:?}");
    assert_eq!(got.exit_code(), Some(3), "{got:?}");
    // The token was used: a second use is refused.
    assert_eq!(spdy_status(&url).await.unwrap(), 404);
    assert_eq!(spdy_status(&url.replace("/exec/", "/exec/x")).await.unwrap(), 404);

    // WebSocket, binary v5 and base64 framings.
    for proto in ["v5.channel.k8s.io", "v4.base64.channel.k8s.io"] {
        let url = exec_url(&node, &c, &cmd, false, true, false).await;
        let mut ws = WsClient::connect(&url, &[proto]).await.unwrap();
        assert_eq!(ws.protocol, proto);
        let got = ws.outcome().await;
        assert_eq!(
            (got.stdout.as_str(), got.stderr.as_str()),
            ("out\n", "err\n"),
            "{proto}: {got:?}"
        );
        assert_eq!(got.exit_code(), Some(3), "{proto}: {got:?}");
    }

    // stdin round-trips through cat until the client closes it: SPDY with a FIN, v5
    // WebSocket with a close message on channel 255.
    let url = exec_url(&node, &c, &["cat"], true, false, false).await;
    let got = spdy_session(&url, Some(b"line one\nline two\n"), true, false).await.unwrap();
    assert_eq!(got.stdout, "line one\nline two\n");
    assert_eq!(got.exit_code(), Some(0), "{got:?}");
    let url = exec_url(&node, &c, &["cat"], true, false, false).await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"]).await.unwrap();
    ws.send(0, b"over websocket\n").await.unwrap();
    ws.send(255, &[0]).await.unwrap();
    let got = ws.outcome().await;
    assert_eq!(got.stdout, "over websocket\n");
    assert_eq!(got.exit_code(), Some(0), "{got:?}");

    // A terminal, sized by the resize stream before the command looks.
    let url =
        exec_url(&node, &c, &["sh", "-c", "read go; stty size; tty"], true, false, true).await;
    let mut s = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let (_, mut err) = s.open(&[("streamtype", "error")]);
    let (stdin, _) = s.open(&[("streamtype", "stdin")]);
    let (_, mut out) = s.open(&[("streamtype", "stdout")]);
    let (resize, _) = s.open(&[("streamtype", "resize")]);
    s.write(resize, br#"{"Width":123,"Height":45}"#);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write(stdin, b"go\r");
    // The terminal is the container's own: it has a name there.
    let text = read_until(&mut out, "/dev/pts/", Duration::from_secs(10)).await;
    assert!(text.contains("45 123") && text.contains("/dev/pts/"), "{text:?}");
    let status = String::from_utf8(read_all(&mut err, Duration::from_secs(10)).await).unwrap();
    assert!(status.contains("Success"), "{status}");
    drop(s);

    // A client that goes away mid-stream takes its process with it.
    let url =
        exec_url(&node, &c, &["sh", "-c", "echo up; exec sleep 7777"], false, false, false).await;
    let mut s = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let _err = s.open(&[("streamtype", "error")]);
    let (_, mut out) = s.open(&[("streamtype", "stdout")]);
    assert_eq!(read_until(&mut out, "up\n", Duration::from_secs(10)).await, "up\n");
    assert_eq!(processes_with("sleep 7777"), 1);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 7777") > 0 {
        assert!(Instant::now() < deadline, "the exec outlived its session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 20 sessions at once all finish with their own output.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = exec_url(
            &node,
            &c,
            &["sh", "-c", &format!("sleep 0.2; echo session-{i}")],
            false,
            false,
            false,
        )
        .await;
        tasks.push(tokio::spawn(async move {
            (i, spdy_session(&url, None, true, false).await.unwrap())
        }));
    }
    for t in tasks {
        let (i, got) = t.await.unwrap();
        assert_eq!(got.stdout, format!("session-{i}\n"));
        assert_eq!(got.exit_code(), Some(0));
    }

    // Nothing left: no exec process in the container, no descriptors kept by berthd.
    let ps = node.exec_ok(&c, &["ps", "-o", "args"]).await;
    assert_eq!(ps.lines().filter(|l| !l.contains("ps -o")).count(), 2, "{ps}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(node.berthd.pid().unwrap()) > berthd_fds + 2 {
        assert!(
            Instant::now() < deadline,
            "berthd holds {} fds, {berthd_fds} before",
            open_fds(node.berthd.pid().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad requests name their field.
    let err = node
        .berthd
        .runtime()
        .exec(ExecRequest {
            container_id: c.clone(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("stdin, stdout, stderr"), "{}", err.message());
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_reads_output_and_writes_stdin() {
    attach_session(Node::start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_reads_output_and_writes_stdin_with_runc() {
    attach_session(Node::start_runc().await).await;
}

async fn attach_session(node: Node) {
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("attach", logs.path()).await;
    let config = ContainerConfig {
        stdin: true,
        ..busybox("echo", &["sh", "-c", "while read l; do echo got:$l; echo e:$l >&2; done"])
    };
    let c = node.run(&pod, config).await;
    let url = node
        .berthd
        .runtime()
        .attach(AttachRequest {
            container_id: c.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut s = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let _err = s.open(&[("streamtype", "error")]);
    let (stdin, _) = s.open(&[("streamtype", "stdin")]);
    let (_, mut out) = s.open(&[("streamtype", "stdout")]);
    let (_, mut errs) = s.open(&[("streamtype", "stderr")]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write(stdin, b"hello\n");
    assert_eq!(read_until(&mut out, "got:hello\n", Duration::from_secs(10)).await, "got:hello\n");
    assert_eq!(read_until(&mut errs, "e:hello\n", Duration::from_secs(10)).await, "e:hello\n");
    drop(s);
    // The container keeps running after the client leaves, and its log has it all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.status(&c).await.state, ContainerState::ContainerRunning as i32);
    let log = std::fs::read_to_string(logs.path().join("echo.log")).unwrap();
    assert!(log.contains("stdout F got:hello"), "{log}");

    // Attaching with stdin to a container without it is refused, naming the field.
    let plain = node.run(&pod, busybox("plain", &["sleep", "3600"])).await;
    let err = node
        .berthd
        .runtime()
        .attach(AttachRequest {
            container_id: plain,
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("stdin:"), "{}", err.message());
    node.remove_pod_and_check(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_the_pods_ports() {
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = node.run_pod("pf", logs.path()).await;
    let script = "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www";
    let c = node.run(&pod, busybox("web", &["sh", "-c", script])).await;
    // Wait until httpd listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node
        .exec(&c, &["sh", "-c", "netstat -ltn | grep -q :8080"])
        .await
        .is_ok_and(|r| r.exit_code == 0)
    {
        assert!(Instant::now() < deadline, "httpd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pf_url = |node: &Node| {
        let pod = pod.clone();
        let mut rt = node.berthd.runtime();
        async move {
            rt.port_forward(PortForwardRequest { pod_sandbox_id: pod, port: vec![8080] })
                .await
                .unwrap()
                .into_inner()
                .url
        }
    };

    // SPDY: two requests on one connection, then a refused port.
    let url = pf_url(&node).await;
    let mut s = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(s.protocol, "portforward.k8s.io");
    for request in ["0", "1"] {
        let (_, mut err) =
            s.open(&[("streamtype", "error"), ("port", "8080"), ("requestid", request)]);
        let (data, mut rx) =
            s.open(&[("streamtype", "data"), ("port", "8080"), ("requestid", request)]);
        s.write(data, b"GET /index.html HTTP/1.0\r\n\r\n");
        let page =
            String::from_utf8_lossy(&read_all(&mut rx, Duration::from_secs(10)).await).into_owned();
        assert!(page.contains("200 OK") && page.contains("hello-from-the-pod"), "{page}");
        assert!(read_all(&mut err, Duration::from_secs(5)).await.is_empty());
    }
    let (_, mut err) = s.open(&[("streamtype", "error"), ("port", "9"), ("requestid", "2")]);
    let (_, _rx) = s.open(&[("streamtype", "data"), ("port", "9"), ("requestid", "2")]);
    let message =
        String::from_utf8_lossy(&read_all(&mut err, Duration::from_secs(10)).await).into_owned();
    assert!(message.contains("refused"), "{message}");
    drop(s);

    // WebSocket: channel 0 is the port's data, 1 its errors, each opened with the port.
    let url = pf_url(&node).await;
    let mut ws =
        WsClient::connect(&format!("{url}?port=8080"), &["v4.channel.k8s.io"]).await.unwrap();
    let mut page = Vec::new();
    let mut opened = 0;
    ws.send(0, b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    while let Some((ch, data)) =
        tokio::time::timeout(Duration::from_secs(10), ws.recv()).await.unwrap()
    {
        if opened < 2 {
            assert_eq!(data, 8080u16.to_le_bytes(), "channel {ch} opens with its port");
            opened += 1;
            continue;
        }
        if ch == 0 {
            page.extend_from_slice(&data);
        }
    }
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("hello-from-the-pod"), "{page}");
    node.remove_pod_and_check(&pod).await;
}
