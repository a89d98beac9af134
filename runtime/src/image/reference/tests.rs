use super::*;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn a_short_name_too_long_once_normalised_is_refused() {
    // Found by the fuzz target: it parsed, but its normalised form did not.
    let name = "x".repeat(250);
    let err = Reference::parse(&name).unwrap_err();
    assert!(err.reason().contains("once normalised"), "{err:?}");
    assert!(Reference::parse(&"x".repeat(237)).is_ok());
}

#[test]
fn parses_and_normalises() {
    // input, registry, repository, tag, digest, full
    let with_digest = format!("docker.io/library/busybox@{D}");
    let tag_and_digest = format!("docker.io/library/busybox:1.36@{D}");
    type Case<'a> = (String, &'a str, &'a str, Option<&'a str>, Option<&'a str>, String);
    let cases: Vec<Case> = vec![
        (
            "busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "busybox:1.36".into(),
            "docker.io",
            "library/busybox",
            Some("1.36"),
            None,
            "docker.io/library/busybox:1.36".into(),
        ),
        (
            "foo/bar".into(),
            "docker.io",
            "foo/bar",
            Some("latest"),
            None,
            "docker.io/foo/bar:latest".into(),
        ),
        (
            "foo/bar/baz:v1".into(),
            "docker.io",
            "foo/bar/baz",
            Some("v1"),
            None,
            "docker.io/foo/bar/baz:v1".into(),
        ),
        (
            "docker.io/busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "index.docker.io/library/busybox".into(),
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "index.docker.io/busybox:1".into(),
            "docker.io",
            "library/busybox",
            Some("1"),
            None,
            "docker.io/library/busybox:1".into(),
        ),
        ("localhost/x".into(), "localhost", "x", Some("latest"), None, "localhost/x:latest".into()),
        (
            "localhost:5000/x".into(),
            "localhost:5000",
            "x",
            Some("latest"),
            None,
            "localhost:5000/x:latest".into(),
        ),
        (
            "localhost:5000/x:5000".into(),
            "localhost:5000",
            "x",
            Some("5000"),
            None,
            "localhost:5000/x:5000".into(),
        ),
        (
            "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
            "registry.k8s.io",
            "e2e-test-images/busybox",
            Some("1.29-2"),
            None,
            "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
        ),
        (
            "127.0.0.1:5000/a/b.c_d__e--f".into(),
            "127.0.0.1:5000",
            "a/b.c_d__e--f",
            Some("latest"),
            None,
            "127.0.0.1:5000/a/b.c_d__e--f:latest".into(),
        ),
        (
            "[::1]:5000/img:t".into(),
            "[::1]:5000",
            "img",
            Some("t"),
            None,
            "[::1]:5000/img:t".into(),
        ),
        ("Example/img".into(), "Example", "img", Some("latest"), None, "Example/img:latest".into()),
        (format!("busybox@{D}"), "docker.io", "library/busybox", None, Some(D), with_digest),
        (
            format!("busybox:1.36@{D}"),
            "docker.io",
            "library/busybox",
            Some("1.36"),
            Some(D),
            tag_and_digest,
        ),
        (
            format!("quay.io:443/org/app:_x.Y-z@{D}"),
            "quay.io:443",
            "org/app",
            Some("_x.Y-z"),
            Some(D),
            format!("quay.io:443/org/app:_x.Y-z@{D}"),
        ),
    ];
    for (input, registry, repository, tag, digest, full) in cases {
        let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.registry(), registry, "{input}");
        assert_eq!(r.repository(), repository, "{input}");
        assert_eq!(r.tag(), tag, "{input}");
        assert_eq!(r.digest(), digest, "{input}");
        assert_eq!(r.to_string(), full, "{input}");
        assert_eq!(r.name(), format!("{registry}/{repository}"), "{input}");
        // The normalised form parses back to itself.
        assert_eq!(Reference::parse(&full).unwrap(), r, "{input}");
    }
}

#[test]
fn rejects_with_a_reason() {
    let long_tag = format!("busybox:{}", "a".repeat(129));
    let long_name = format!("{}/x", "a".repeat(260));
    let hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty reference"),
        (" busybox".into(), "whitespace"),
        ("Busybox".into(), "uppercase"),
        ("docker.io/Foo/bar".into(), "uppercase"),
        ("foo//bar".into(), "empty path component"),
        ("foo/".into(), "empty path component"),
        ("/foo".into(), "empty path component"),
        ("busybox:".into(), "empty tag"),
        (":tag".into(), "empty repository"),
        ("busybox:-x".into(), "must start with"),
        ("busybox:a+b".into(), "contains '+'"),
        (long_tag, "at most 128"),
        (long_name, "at most 255"),
        ("busybox@sha256:abc".into(), "64 lowercase hexadecimal"),
        (format!("busybox@sha256:{}", hex64.to_uppercase()), "64 lowercase"),
        ("busybox@md5:0123".into(), "not supported"),
        ("busybox@".into(), "not of the form"),
        ("foo_/bar".into(), "must start and end"),
        ("foo/-bar".into(), "must start and end"),
        ("foo/a...b".into(), "separate"),
        ("foo/a___b".into(), "separate"),
        ("foo/a.-b".into(), "separate"),
        ("foo/a$b".into(), "separate"),
        ("exa_mple.com/x".into(), "invalid label"),
        ("example.com:/x".into(), "invalid port"),
        ("example.com:50a/x".into(), "invalid port"),
        ("-example.com/x".into(), "invalid label"),
        ("[::1/x".into(), "unclosed"),
        ("[zz]:5000/x".into(), "not an IPv6"),
        (hex64.into(), "image id"),
        (format!("busybox@{D}@{D}"), "digest"),
    ];
    for (input, want) in cases {
        match Reference::parse(&input) {
            Ok(r) => panic!("{input:?} parsed as {r}"),
            Err(e) => assert!(
                e.to_string().contains(want),
                "{input:?}: error {e} does not mention {want:?}"
            ),
        }
    }
}

#[test]
fn image_ids() {
    let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(parse_image_id(hex), Some(format!("sha256:{hex}")));
    assert_eq!(parse_image_id(&format!("sha256:{hex}")), Some(format!("sha256:{hex}")));
    for not_id in [
        "busybox",
        &hex[1..],
        &hex.to_uppercase(),
        &format!("sha512:{hex}"),
        &format!("busybox@sha256:{hex}"),
    ] {
        assert!(!looks_like_image_id(not_id), "{not_id}");
    }
}

#[test]
fn mirror_urls() {
    let ok = [
        ("http://127.0.0.1:5000", "127.0.0.1:5000", true),
        ("https://mirror.example.com", "mirror.example.com", false),
        ("https://mirror.example.com/v2/", "mirror.example.com", false),
        ("mirror.example.com:8443", "mirror.example.com:8443", false),
        ("http://[::1]:5000/", "[::1]:5000", true),
    ];
    for (url, host, plain) in ok {
        let m = parse_mirror_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!((m.host.as_str(), m.plain_http), (host, plain), "{url}");
    }
    for (url, want) in [
        ("ftp://x", "scheme"),
        ("https://x/prefix", "path"),
        ("https://u:p@x", "credentials"),
        ("http://", "empty host"),
    ] {
        let e = parse_mirror_url(url).unwrap_err();
        assert!(e.to_string().contains(want), "{url}: {e}");
    }
}

fn ep(host: &str, repository: &str, plain_http: bool, mirror: bool) -> Endpoint {
    Endpoint { host: host.into(), repository: repository.into(), plain_http, mirror }
}

#[test]
fn endpoints() {
    let mirrors: BTreeMap<String, Vec<String>> = [
        ("registry.k8s.io", vec!["http://127.0.0.1:5000"]),
        ("docker.io", vec!["https://hub-mirror.example.com", "bad://x", "http://127.0.0.1:5001"]),
        ("localhost:5000", vec!["http://localhost:5000"]),
        ("*", vec!["https://catch-all.example.com"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();

    let cases = [
        (
            "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            vec![
                ep("127.0.0.1:5000", "e2e-test-images/busybox", true, true),
                ep("registry.k8s.io", "e2e-test-images/busybox", false, false),
            ],
        ),
        (
            "busybox",
            vec![
                ep("hub-mirror.example.com", "library/busybox", false, true),
                ep("127.0.0.1:5001", "library/busybox", true, true),
                ep("registry-1.docker.io", "library/busybox", false, false),
            ],
        ),
        // A mirror entry naming the registry itself only switches it to plain HTTP.
        ("localhost:5000/app", vec![ep("localhost:5000", "app", true, false)]),
        (
            "quay.io/org/app",
            vec![
                ep("catch-all.example.com", "org/app", false, true),
                ep("quay.io", "org/app", false, false),
            ],
        ),
    ];
    for (input, want) in cases {
        let r = Reference::parse(input).unwrap();
        assert_eq!(resolve_endpoints(&r, &mirrors), want, "{input}");
    }

    let none = BTreeMap::new();
    let r = Reference::parse("gcr.io/p/i").unwrap();
    assert_eq!(resolve_endpoints(&r, &none), vec![ep("gcr.io", "p/i", false, false)]);
    assert_eq!(
        resolve_endpoints(&Reference::parse("busybox").unwrap(), &none),
        vec![ep("registry-1.docker.io", "library/busybox", false, false)]
    );
}
