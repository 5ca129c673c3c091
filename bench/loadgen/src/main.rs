//! `meetup-loadgen`: load one part of the MeetUp system and print one JSON line of
//! results (and a readable copy on stderr).

use clap::{Parser, Subcommand};
use meetup_loadgen::{bare, churn, grpc, idle, relay, report, soak, storm};

#[derive(Debug, Parser)]
#[command(
    name = "meetup-loadgen",
    about = "Open-loop load generator for MeetUp gateways and services",
    version
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Pairs in calls relaying ICE candidates at a fixed rate: one-way latency, loss.
    Relay(relay::RelayArgs),
    /// Users joining at once: time until everyone holds the full users-list.
    Storm(storm::StormArgs),
    /// Idle connections: the gateway's resident memory per connection.
    Idle(idle::IdleArgs),
    /// Call churn: start, join, relay, leave; latency per step, calls per second.
    Calls(churn::ChurnArgs),
    /// Calls across gateways while every user's connection drops and resumes:
    /// calls alive, relays delivered or reported, reconnect-to-resumed latency.
    Resume(soak::SoakArgs),
    /// RPC load on the presence service.
    Presence(grpc::GrpcArgs),
    /// RPC load on the call service.
    CallsGrpc(grpc::GrpcArgs),
    /// The relay traffic against a raw WebSocket echo server: round trips.
    Echo {
        /// ws:// URL of the echo server.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 180)]
        payload_bytes: usize,
    },
    /// Runs a Socket.IO server that only accepts connections (the library's own
    /// memory per connection, beside the gateway's).
    BareServer(bare::BareArgs),
    /// Runs the raw WebSocket echo server (the floor the relay is compared with).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:9200")]
        listen: std::net::SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().scenario {
        Scenario::Relay(args) => relay::run(&args).await?,
        Scenario::Storm(args) => storm::run(&args).await?,
        Scenario::Idle(args) => idle::run(&args).await?,
        Scenario::Calls(args) => churn::run(&args).await?,
        Scenario::Resume(args) => soak::run(&args).await?,
        Scenario::Presence(args) => grpc::run(grpc::Target::Presence, &args).await?,
        Scenario::CallsGrpc(args) => grpc::run(grpc::Target::Calls, &args).await?,
        Scenario::Echo {
            url,
            pairs,
            rate,
            duration,
            payload_bytes,
        } => relay::run_echo(&url, pairs, rate, duration, payload_bytes).await?,
        Scenario::BareServer(args) => return bare::serve(&args).await,
        Scenario::EchoServer { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("echo server on {}", listener.local_addr()?);
            println!("{{\"echo_server\":\"ws://{}\"}}", listener.local_addr()?);
            tokio::select! {
                result = relay::echo_server(listener) => result?,
                () = async { let _ = tokio::signal::ctrl_c().await; } => {}
            }
            return Ok(());
        }
    };
    report::emit(&result);
    Ok(())
}
