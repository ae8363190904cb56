//! What operators see. The agent builds one `Snapshot` (`builder`) once a second and at every
//! transition; renderers format it: the HTML page (`html`), Prometheus text (`prometheus`),
//! terminal tables (`table`), all served by `http`.

pub mod builder;
pub mod format;
pub mod html;
pub mod http;
pub mod prometheus;
#[cfg(test)]
mod sample;
pub mod snapshot;
pub mod table;
pub mod tcplog;
