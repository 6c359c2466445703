//! `loadtest`: a load generator for Socket.IO servers that speaks Engine.IO
//! v4 / Socket.IO v5 itself (WebSocket and long-polling), so the gateway and
//! its peers (Node Socket.IO, socketioxide) are measured by the same client.
//!
//! Modules: [`protocol`] (packets, pure), [`payload`] (what a published
//! message carries, pure), [`transport`] (client
//! connections), [`shards`] (worker threads), [`scenario`] (fanout, idle,
//! churn, targeted), [`stats`] (loss and latency accounting, pure),
//! [`procfs`] (server CPU and memory), [`report`] (table and JSON),
//! [`table`] (side-by-side comparison of saved reports).

mod cli;
mod payload;
mod procfs;
mod protocol;
mod report;
mod rng;
mod scenario;
mod shards;
mod stats;
mod table;
mod transport;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Scenario};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(common) = cli.scenario.common().cloned() else {
        return match &cli.scenario {
            Scenario::Table(args) => match table::run(args) {
                Ok(t) => {
                    print!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: {e:#}");
                    ExitCode::from(2)
                }
            },
            _ => ExitCode::from(2),
        };
    };
    match run(&cli.scenario) {
        Ok(report) => {
            if common.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("loadtest: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.table());
            }
            if common.assert_zero_loss && !report.ok {
                eprintln!("loadtest: FAILED: {}", report.failures.join("; "));
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(scenario: &Scenario) -> Result<report::Report> {
    // The coordinator is light; the clients run on the shard threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match scenario {
            Scenario::Fanout(a) => scenario::delivery::fanout(a).await,
            Scenario::Targeted(a) => scenario::delivery::targeted(a).await,
            Scenario::Chat(a) => scenario::delivery::chat(a).await,
            Scenario::Idle(a) => scenario::idle::idle(a).await,
            Scenario::Churn(a) => scenario::churn::churn(a).await,
            Scenario::Table(_) => anyhow::bail!("table runs no scenario"),
        }
    })
}
