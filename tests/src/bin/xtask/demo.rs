//! `cargo xtask demo`: installs what the demo needs, builds it, then becomes it (the demo
//! powers the node off on Ctrl-C, so nothing may stand between it and the terminal).

use std::path::Path;

use cairn_api::board::Board;
use cairn_tests::steps::Steps;

use crate::host::{Host, HostError, Invocation};
use crate::packages;

/// The demo's cargo arguments, after `build` or `run`.
const DEMO: [&str; 4] = ["-p", "cairn-tests", "--example", "qemu-node"];

/// Installs, builds, then replaces xtask with the demo; returns only if something failed.
pub fn run(host: &mut impl Host, board: &Board, cargo: &str, workspace: &Path) -> HostError {
    let cargo = |verb: &str| {
        DEMO.iter().fold(Invocation::new(cargo, &[verb]), |c, a| c.arg(*a)).in_dir(workspace)
    };
    let mut steps = Steps::new();
    steps.start("host packages");
    let built = packages::ensure(host, &packages::demo(board)).and_then(|_| {
        steps.start("build the demo");
        host.run(&cargo("build"))
    });
    steps.finish(built.is_err());
    if let Err(error) = built {
        return error;
    }
    let demo = cargo("run");
    println!("$ {demo}");
    host.exec(&demo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn a_warm_host_builds_the_demo_then_becomes_it() {
        let board = cairn_tests::board("generic-x86_64");
        let needs = packages::demo(&board);
        let mut host = FakeHost::warm(&needs);
        run(&mut host, &board, "cargo", Path::new("/w"));
        assert_eq!(
            host.ran[1..],
            [
                "cargo build -p cairn-tests --example qemu-node",
                "exec cargo run -p cairn-tests --example qemu-node"
            ]
        );
    }
}
