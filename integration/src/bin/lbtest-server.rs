//! A backend for the tests and the lab: on each connection it sends its name and a newline,
//! then echoes everything back until the client closes. A port given as `close:PORT` closes
//! right after the name instead (the server closes first, as HTTP's `Connection: close` does,
//! and keeps the tuple in TIME_WAIT); `rst:PORT` sends the name and resets the connection;
//! `ctl:PORT` reads one line after the name and does what it says: `close`, `rst` or `echo`.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    thread,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Echo,
    Close,
    Reset,
    Control,
}

fn serve(mut s: TcpStream, name: &str, mode: Mode) -> std::io::Result<()> {
    s.write_all(format!("{name}\n").as_bytes())?;
    let mode = if mode == Mode::Control {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        match &line[..] {
            b"close" => Mode::Close,
            b"rst" => Mode::Reset,
            _ => Mode::Echo,
        }
    } else {
        mode
    };
    match mode {
        Mode::Echo | Mode::Control => {}
        Mode::Close => return s.shutdown(Shutdown::Both),
        Mode::Reset => return integration::traffic::reset(s).map_err(std::io::Error::other),
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
    }
    s.shutdown(Shutdown::Write)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), ports) = (args.get(1), &args[2.min(args.len())..]) else {
        eprintln!("usage: lbtest-server NAME PORT...");
        std::process::exit(2);
    };
    if ports.is_empty() {
        eprintln!("usage: lbtest-server NAME PORT...");
        std::process::exit(2);
    }
    let mut handles = Vec::new();
    for port in ports {
        let (mode, port) = match port.split_once(':') {
            Some(("close", p)) => (Mode::Close, p),
            Some(("rst", p)) => (Mode::Reset, p),
            Some(("ctl", p)) => (Mode::Control, p),
            _ => (Mode::Echo, port.as_str()),
        };
        // Both families (a `::` socket takes IPv4 too, as v4-mapped), IPv4 alone where the host
        // has no IPv6.
        let port = port.parse::<u16>().expect("port");
        let l = TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port))).expect("bind");
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || {
                    let _ = serve(s, &name, mode);
                });
            }
        }));
    }
    println!("lbtest-server {name} listening on {}", ports.join(","));
    for h in handles {
        let _ = h.join();
    }
}
