//! A backend for the tests and the lab: on each connection it sends its name and a newline,
//! then echoes everything back until the client closes.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    thread,
};

fn serve(mut s: TcpStream, name: &str) -> std::io::Result<()> {
    s.write_all(format!("{name}\n").as_bytes())?;
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
        let l = TcpListener::bind(("0.0.0.0", port.parse::<u16>().expect("port"))).expect("bind");
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for s in l.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || {
                    let _ = serve(s, &name);
                });
            }
        }));
    }
    println!("lbtest-server {name} listening on {}", ports.join(","));
    for h in handles {
        let _ = h.join();
    }
}
