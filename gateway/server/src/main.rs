//! `meetup-gateway`: the Socket.IO edge. With nothing configured it runs the whole
//! system in this one process.

use std::process::ExitCode;

use clap::Parser;
use meetup_gateway::Config;
use meetup_platform::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = telemetry::init("meetup-gateway", config.log_format);
    if let Err(error) = config.validate() {
        eprintln!("meetup-gateway: {error}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.http_addr()).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "meetup-gateway: cannot listen on {}: {error}",
                config.http_addr()
            );
            return ExitCode::from(2);
        }
    };
    let result = meetup_server::run(config, listener, shutdown::signal()).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meetup-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}
