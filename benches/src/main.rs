//! `mqws-load`: load generator and benchmark harness for mqws (see `benches/README.md`).

use clap::Parser as _;
use mqws_benches::cli::Args;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("mqws-load: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqws-load: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(mqws_benches::run::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqws-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
