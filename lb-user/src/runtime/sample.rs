//! A sample snapshot for the runtime formats' tests, and HAProxy 2.6's own `show stat` header.

use crate::report::snapshot::{
    sample::{check, server, traffic},
    BackendState, BackendStatus, CheckSummary, Code, FrontendStatus, InterfaceStatus, ServerState, ServerStatus,
    Snapshot,
};

/// HAProxy 2.6's `show stat` header, as Debian 12's 2.6.12 prints it.
pub const HAPROXY_26_HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,\
dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,\
qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,\
check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,\
req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,\
last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,\
check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,\
conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,\
cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,\
safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,\
agg_check_status,-,ssl_sess,\
ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,\
h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,\
h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,\
h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,\
h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,\
h1_spliced_bytes_in,h1_spliced_bytes_out,";

pub fn snapshot() -> Snapshot {
    let app1 = ServerStatus {
        active_flows: 7,
        traffic: traffic(120, 2.4, 5_000, 9_000),
        check_failures: 1,
        down_transitions: 1,
        downtime_s: 12,
        weight: 2,
        ..server("app1", "10.0.0.1:2379", ServerState::Up)
    };
    let app2 = ServerStatus {
        since_s: 300,
        check_failures: 4,
        last_check: check(Code::L7Sts, Some(503), 5, "Service Unavailable"),
        ..server("app2", "10.0.0.2:2379", ServerState::GoingDown)
    };
    let app3 = ServerStatus {
        check_failures: 9,
        down_transitions: 2,
        downtime_s: 600,
        last_check: check(Code::L4Con, None, 0, "\"Connection refused\", errno 111"),
        ..server("app3", "10.0.0.3:2379", ServerState::Down)
    };
    let api1 = ServerStatus {
        last_check: check(Code::L7Ok, Some(200), 8, "OK"),
        weight: 10,
        ..server("api1", "10.0.1.1:6443", ServerState::Up)
    };
    let api2 = ServerStatus { weight: 10, ..server("api2", "10.0.1.2:6443", ServerState::Drain) };
    let api3 = ServerStatus { weight: 10, last_check: None, ..server("api3", "10.0.1.3:6443", ServerState::Maint) };
    let api4 = ServerStatus { backup: true, weight: 5, ..server("api4", "10.0.1.4:6443", ServerState::Up) };
    Snapshot {
        version: "0.3.0".to_string(),
        uptime_s: 65,
        pid: 4242,
        interfaces: vec![InterfaceStatus {
            name: "eth0".into(),
            xdp: crate::dataplane::Attached::Native,
            running: true,
        }],
        frontends: vec![
            FrontendStatus {
                name: "in-etcd".to_string(),
                bind: "*:12379".to_string(),
                backend: "etcd-cluster".to_string(),
                traffic: traffic(120, 2.4, 5_000, 9_000),
                active_flows: 7,
                denied: 4,
            },
            FrontendStatus {
                name: "in-apiserver".to_string(),
                bind: "*:16443".to_string(),
                backend: "apiserver-cluster".to_string(),
                traffic: traffic(30, 0.4, 800, 1_600),
                active_flows: 3,
                denied: 0,
            },
        ],
        backends: vec![
            BackendStatus {
                name: "etcd-cluster".to_string(),
                status: BackendState::Up,
                servers: vec![app1, app2, app3],
                active_up: 2,
                backup_up: 0,
                weight: 3,
                balance: crate::config::Balance::Roundrobin,
                traffic: traffic(120, 2.4, 5_000, 9_000),
                active_flows: 7,
                downtime_s: 0,
                check: CheckSummary::default(),
                verify_none: false,
            },
            BackendStatus {
                name: "apiserver-cluster".to_string(),
                status: BackendState::Up,
                servers: vec![api1, api2, api3, api4],
                active_up: 1,
                backup_up: 1,
                weight: 10,
                balance: crate::config::Balance::Leastconn,
                traffic: traffic(30, 0.4, 800, 1_600),
                active_flows: 3,
                downtime_s: 5,
                check: CheckSummary::default(),
                verify_none: true,
            },
        ],
        reasons: vec![],
        events: vec![],
        address_changes: 0,
        sync: vec![],
        sync_peers_up: 0,
    }
}
