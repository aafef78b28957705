//! Per-connection setup cost through the capture (used by `bench/run.sh`, not by meshcap).
//!
//! `connbench LISTEN_PORT DEST_ADDR:PORT COUNT ROUNDS` accepts on `0.0.0.0:LISTEN_PORT` (the
//! stand-in proxy the capture redirects to) and, in `ROUNDS` rounds, opens and closes `COUNT`
//! TCP connections to `DEST_ADDR:PORT`, so that the first packet of each one walks the nat
//! OUTPUT rules. Prints the median over the rounds of the microseconds per connection. Run it
//! inside a throw-away network namespace only; the destination must be an address the capture
//! redirects (it is never reached).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: connbench LISTEN_PORT DEST_ADDR:PORT COUNT ROUNDS";
    let [_, listen, dest, count, rounds] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let listen: u16 = listen.parse().expect("LISTEN_PORT");
    let dest: SocketAddr = dest.parse().expect("DEST_ADDR:PORT");
    let count: usize = count.parse().expect("COUNT");
    let rounds: usize = rounds.parse().expect("ROUNDS");
    assert!(count * rounds <= 50_000, "at most 50,000 connections");

    let listener = TcpListener::bind(("0.0.0.0", listen)).expect("bind the stand-in proxy");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });

    let mut per_conn_us: Vec<f64> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..count {
            let s = TcpStream::connect_timeout(&dest, Duration::from_secs(2)).expect("connect through the capture");
            drop(s);
        }
        per_conn_us.push(start.elapsed().as_secs_f64() * 1e6 / count as f64);
    }
    per_conn_us.sort_by(f64::total_cmp);
    println!("{:.2}", per_conn_us[per_conn_us.len() / 2]);
}
