//! `mqws-catchup`: catch-up benchmarks for mqws — replay speed, reconnect storms of
//! server-held sessions, disk use under retention (see `benches/README.md`).

use clap::Parser as _;
use mqws_benches::catchup::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("mqws-catchup: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.common.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqws-catchup: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(mqws_benches::catchup::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqws-catchup: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
