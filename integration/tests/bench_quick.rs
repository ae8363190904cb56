//! The benchmark's quick run, so that it cannot rot: every contender is measured and the
//! report is written. Nothing here asserts a speed (the benchmark is not a test).

#[test]
fn the_quick_benchmark_runs_every_contender() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdplb-bench"))
        .arg("--quick")
        .env("XDPLB_BIN", integration::agent::xdplb_bin().unwrap())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench/bench.json")).unwrap(),
    )
    .unwrap();
    for c in ["direct", "HAProxy", "nftables", "xdplb, native", "xdplb, generic"] {
        let (_, v) = json["wrk"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| k.starts_with(c))
            .unwrap_or_else(|| panic!("{c} missing"));
        assert!(v["median"]["keepalive_rps"].as_f64().unwrap() > 0.0, "{c}: {v}");
        assert!(v["median"]["single_conn_bytes_per_s"].as_f64().unwrap() > 0.0, "{c}: {v}");
    }
    assert!(json["prog"]["SYN (new flow)"]["median_ns"].as_f64().unwrap() > 0.0);
    let failover = json["failover"].as_object().expect("the failover section");
    for c in ["HAProxy", "xdplb"] {
        let (_, v) = failover.iter().find(|(k, _)| k.contains(c)).unwrap_or_else(|| panic!("failover: {c} missing"));
        assert!(v["connections"].as_u64().unwrap() > 0, "failover, {c}: {v}");
    }
    let connect = json["connect"].as_object().expect("the connect section");
    assert_eq!(connect.len(), 3, "{connect:?}");
    for (way, v) in connect {
        assert!(v["median"].as_f64().unwrap() > 0.0, "connect, {way}: {v}");
    }
    let latency = json["latency"].as_object().expect("the latency section");
    assert_eq!(latency.len(), 5, "{latency:?}");
    for (way, v) in latency {
        assert!(v["rounds"][0]["wrk"]["p99_us"].as_f64().unwrap() > 0.0, "latency, {way}: {v}");
    }
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench/chart.png")).exists());
}
