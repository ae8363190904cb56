//! The health checker against real TLS servers in this process (rcgen certificates): every
//! HAProxy result code it can give, with timing, and no check delaying another.

use std::{
    net::SocketAddrV4,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use integration::pki::{Ca, Leaf};
use lb_user::{
    config::{CheckCfg, CheckKind, Dur, ExpectStatus, Verify},
    health::{
        check::{self, CheckSpec, Code},
        tls,
    },
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
enum Behaviour {
    /// Answers with this status and body.
    Http(u16, &'static str),
    /// Accepts TCP and never speaks.
    HangAfterTcp,
    /// Completes TLS and never answers the request.
    HangAfterTls,
    /// Sends half a response, then resets the connection.
    ResetMidResponse,
    /// Sends the response one byte every 100 ms.
    Trickle,
}

struct Pki {
    ca: Ca,
    dir: PathBuf,
}

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(integration::netns::unique("xdplb-checker-"));
    let ca = Ca::new("xdplb test CA").unwrap();
    ca.write(&dir).unwrap();
    Pki { ca, dir }
}

fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let b = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
            b.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build().unwrap(),
            )
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(b.with_single_cert(certs, key).unwrap())
}

/// A TLS server on 127.0.0.1 with `behaviour`; returns its address.
async fn serve(config: Arc<ServerConfig>, behaviour: Behaviour) -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = match l.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                if let Behaviour::HangAfterTcp = behaviour {
                    let _keep = tcp;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.1\r\nHost: "));
                let reply = |status: u16, body: &str| {
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                        body.len()
                    )
                };
                match behaviour {
                    Behaviour::Http(status, body) => {
                        let _ = s.write_all(reply(status, body).as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                    Behaviour::HangAfterTls => tokio::time::sleep(Duration::from_secs(60)).await,
                    Behaviour::ResetMidResponse => {
                        let r = reply(200, "{\"health\":\"true\"}");
                        let _ = s.write_all(&r.as_bytes()[..20]).await;
                        let _ = s.flush().await;
                        let (tcp, _) = s.into_inner();
                        // SO_LINGER 0: close sends RST, which is the point here.
                        #[allow(deprecated)]
                        let _ = tcp.set_linger(Some(Duration::ZERO));
                        drop(tcp);
                    }
                    Behaviour::Trickle => {
                        for b in reply(200, "{\"health\":\"true\"}").bytes() {
                            if s.write_all(&[b]).await.is_err() {
                                return;
                            }
                            let _ = s.flush().await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Behaviour::HangAfterTcp => unreachable!(),
                }
            });
        }
    });
    addr
}

fn cfg(verify: Verify, ca: Option<PathBuf>, client: Option<(PathBuf, PathBuf)>) -> CheckCfg {
    CheckCfg {
        kind: CheckKind::Https,
        path: "/health".into(),
        expect_string: Some("true".into()),
        verify,
        ca_file: ca,
        crt: client.as_ref().map(|c| c.0.clone()),
        key: client.map(|c| c.1),
        timeout: Some(Dur(Duration::from_millis(1000))),
        ..CheckCfg::default()
    }
}

fn spec(c: &CheckCfg, addr: SocketAddrV4) -> CheckSpec {
    CheckSpec {
        kind: c.kind,
        addr: addr.into(),
        timeout: c.timeout(),
        path: c.path.clone(),
        host: addr.to_string(),
        expect_status: c.expect_status,
        expect_string: c.expect_string.clone(),
        tls: Some((tls::client_config(c).unwrap(), ServerName::IpAddress(std::net::IpAddr::V4(*addr.ip()).into()))),
    }
}

async fn check(behaviour: Behaviour, c: &CheckCfg, server: &Leaf, client_ca: Option<&Ca>) -> check::CheckResult {
    let addr = serve(server_config(server, client_ca), behaviour).await;
    check::run(&spec(c, addr)).await
}

#[tokio::test]
async fn every_result_code_with_verify_none() {
    let p = pki();
    let leaf = p.ca.server("etcd", &["127.0.0.1"]).unwrap();
    let c = cfg(Verify::None, None, None);
    let timeout = c.timeout();

    let r = check(Behaviour::Http(200, "{\"health\":\"true\"}"), &c, &leaf, None).await;
    assert_eq!((r.code, r.http_status), (Code::L7Ok, Some(200)), "{r:?}");

    // A sick kube-apiserver: 500 with "ok" in the body. HAProxy's `expect string` passes it; we do not.
    let c_ok = CheckCfg { expect_string: Some("ok".into()), ..c.clone() };
    let r =
        check(Behaviour::Http(500, "[-]etcd failed: reason withheld\nhealthz check failed: ok"), &c_ok, &leaf, None)
            .await;
    assert_eq!((r.code, r.http_status), (Code::L7Sts, Some(500)), "{r:?}");

    let r = check(Behaviour::Http(200, "{\"health\":\"false\"}"), &c, &leaf, None).await;
    assert_eq!(r.code, Code::L7Rsp, "body without the expected string: {r:?}");

    let started = Instant::now();
    let r = check(Behaviour::HangAfterTcp, &c, &leaf, None).await;
    assert_eq!(r.code, Code::L6Tout, "TCP accepted, no TLS: {r:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(300), "a timeout, not a hang");

    let r = check(Behaviour::HangAfterTls, &c, &leaf, None).await;
    assert_eq!(r.code, Code::L7Tout, "TLS but no HTTP answer: {r:?}");

    let r = check(Behaviour::Trickle, &c, &leaf, None).await;
    assert_eq!(r.code, Code::L7Tout, "a response trickling past the timeout: {r:?}");
    assert!(r.duration < timeout + Duration::from_millis(300));

    let r = check(Behaviour::ResetMidResponse, &c, &leaf, None).await;
    assert!(matches!(r.code, Code::SockErr | Code::L7Rsp), "reset mid-response: {r:?}");
    assert!(!r.code.passed());

    // Nothing listens: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = match closed.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    drop(closed);
    let r = check::run(&spec(&c, addr)).await;
    assert_eq!(r.code, Code::L4Con, "{r:?}");
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[tokio::test]
async fn a_tls_check_passes_on_the_handshake_and_a_status_range_as_haproxy_defaults() {
    let p = pki();
    let leaf = p.ca.server("etcd", &["127.0.0.1"]).unwrap();
    let https = cfg(Verify::None, None, None);
    // `check-ssl` without httpchk: the handshake is the check (HAProxy's L6OK), no request sent.
    let tls = CheckCfg { kind: CheckKind::Tls, expect_string: None, ..https.clone() };
    let r = check(Behaviour::HangAfterTls, &tls, &leaf, None).await;
    assert_eq!((r.code, r.http_status), (Code::L6Ok, None), "{r:?}");
    let r = check(Behaviour::HangAfterTcp, &tls, &leaf, None).await;
    assert_eq!(r.code, Code::L6Tout, "TCP accepted, no TLS: {r:?}");

    // HAProxy's default expectation, 2xx and 3xx: a redirect passes, a 404 does not.
    let range = CheckCfg { expect_status: ExpectStatus::HAPROXY_DEFAULT, expect_string: None, ..https };
    let r = check(Behaviour::Http(302, ""), &range, &leaf, None).await;
    assert_eq!((r.code, r.http_status), (Code::L7Ok, Some(302)), "{r:?}");
    let r = check(Behaviour::Http(404, ""), &range, &leaf, None).await;
    assert_eq!((r.code, r.http_status), (Code::L7Sts, Some(404)), "{r:?}");
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[tokio::test]
async fn certificates_are_verified_when_a_ca_is_configured() {
    let p = pki();
    let ca_file = p.dir.join("ca.pem");
    let good = p.ca.server("etcd", &["127.0.0.1"]).unwrap();
    let r = check(Behaviour::Http(200, "true"), &cfg(Verify::Required, Some(ca_file.clone()), None), &good, None).await;
    assert_eq!(r.code, Code::L7Ok, "{r:?}");

    // Wrong name: a certificate for another address.
    let wrong_name = p.ca.server("etcd", &["198.18.0.99"]).unwrap();
    let r = check(Behaviour::Http(200, "true"), &cfg(Verify::Required, Some(ca_file.clone()), None), &wrong_name, None)
        .await;
    assert_eq!(r.code, Code::L6Rsp, "{r:?}");
    assert!(r.detail.contains("certificate"), "the reason names the certificate: {}", r.detail);
    // ... which `verify none` accepts, like HAProxy.
    let r = check(Behaviour::Http(200, "true"), &cfg(Verify::None, None, None), &wrong_name, None).await;
    assert_eq!(r.code, Code::L7Ok, "{r:?}");

    // Expired: refused with the reason when a CA is configured, accepted with verify none.
    let expired = p.ca.expired_server("etcd", &["127.0.0.1"]).unwrap();
    let r =
        check(Behaviour::Http(200, "true"), &cfg(Verify::Required, Some(ca_file.clone()), None), &expired, None).await;
    assert_eq!(r.code, Code::L6Rsp, "{r:?}");
    assert!(r.detail.to_lowercase().contains("expired"), "{}", r.detail);
    let r = check(Behaviour::Http(200, "true"), &cfg(Verify::None, None, None), &expired, None).await;
    assert_eq!(r.code, Code::L7Ok, "{r:?}");

    // Signed by another CA.
    let other = Ca::new("someone else").unwrap().server("etcd", &["127.0.0.1"]).unwrap();
    let r = check(Behaviour::Http(200, "true"), &cfg(Verify::Required, Some(ca_file), None), &other, None).await;
    assert_eq!(r.code, Code::L6Rsp, "{r:?}");
    assert!(r.detail.to_lowercase().contains("issuer") || r.detail.contains("certificate"), "{}", r.detail);
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_a_checker_without_one() {
    let p = pki();
    let leaf = p.ca.server("etcd", &["127.0.0.1"]).unwrap();
    let client = p.ca.client("xdplb").unwrap().write(&p.dir, "client").unwrap();
    let r =
        check(Behaviour::Http(200, "{\"health\":\"true\"}"), &cfg(Verify::None, None, None), &leaf, Some(&p.ca)).await;
    assert_eq!(r.code, Code::L6Rsp, "no client certificate: {r:?}");
    let r = check(
        Behaviour::Http(200, "{\"health\":\"true\"}"),
        &cfg(Verify::None, None, Some(client)),
        &leaf,
        Some(&p.ca),
    )
    .await;
    assert_eq!(r.code, Code::L7Ok, "with the client certificate: {r:?}");
    let _ = std::fs::remove_dir_all(&p.dir);
}

#[tokio::test]
async fn a_hanging_server_delays_no_other_check() {
    let p = pki();
    let leaf = p.ca.server("etcd", &["127.0.0.1"]).unwrap();
    let c = cfg(Verify::None, None, None);
    let hang = serve(server_config(&leaf, None), Behaviour::HangAfterTcp).await;
    let good = serve(server_config(&leaf, None), Behaviour::Http(200, "true")).await;
    let (hs, gs) = (spec(&c, hang), spec(&c, good));
    let slow = tokio::spawn(async move { check::run(&hs).await });
    let fast = check::run(&gs).await;
    assert_eq!(fast.code, Code::L7Ok);
    // An order of events, not a duration: the good check was done while the hanging one still
    // waited for its timeout (1 s), so it never waited for it.
    assert!(!slow.is_finished(), "the good check finished only after the hanging one");
    assert_eq!(slow.await.unwrap().code, Code::L6Tout);
    let _ = std::fs::remove_dir_all(&p.dir);
}
