//! The QEMU suite: for every board that boots under QEMU, one test per scenario, so that a
//! failure names its scenario, the others still run, and any one runs alone
//! (`cargo test -p cairn-tests --test boot generic_x86_64::pods`).
//!
//! Images and bundles are built once per set of inputs (cached under the target dir, shared
//! by test binaries). A board's configured node is made once per run by its first boot (the
//! `first_boot` scenario); the other scenarios start from copies of its disk (qcow2
//! overlays), as many VMs at once as the host's cores allow. Each scenario prints its
//! duration (`scenario generic-x86_64/pods: 93.2 s`).
//!
//! Needs qemu-system-x86 and ovmf, qemu-system-arm and u-boot-qemu for the ARM boards
//! (`cargo xtask test` installs them), the host's `qemu-img` (qemu-utils), a cross toolchain
//! for the ARM boards' machined (`$CAIRN_CROSS_RUST`, as `cargo xtask cross-toolchain`
//! prints, or rustup's targets) and the Debian archive (the packages are cached in
//! $CAIRN_CACHE, or target/cairn-cache).

mod boot {
    pub mod images;
    pub mod netboot;
    pub mod node;
    pub mod pods;
    pub mod power;
    pub mod updates;
}

/// The scenarios of each `board_module => BOARD: [scenario, ...]`: the listed ones of
/// [`scenario!`]'s.
macro_rules! qemu_scenarios {
    ($($board_module:ident => $board:path: [$($scenario:ident),* $(,)?]),* $(,)?) => {$(
        mod $board_module {
            use std::sync::OnceLock;

            use cairn_tests::boards::Board;
            use cairn_tests::scenario;

            #[allow(unused_imports)]
            use super::boot::node::{self, ConfiguredNode};
            #[allow(unused_imports)]
            use super::boot::updates::{self, Bundles};
            #[allow(unused_imports)]
            use super::boot::{images, netboot, pods, power};

            static BOARD: &Board = &$board;

            /// The board's configured node, made by the first scenario that needs it.
            fn configured() -> &'static ConfiguredNode {
                static NODE: OnceLock<Result<ConfiguredNode, String>> = OnceLock::new();
                node::once(&NODE, BOARD)
            }

            /// Runs the scenario `name` on a copy of the configured node.
            #[allow(dead_code)]
            fn on_node(name: &str, body: impl FnOnce(&ConfiguredNode)) {
                let node = configured();
                scenario::run(BOARD, name, || body(node));
            }

            /// Runs the update scenario `name` once the bundles of `versions` are built.
            #[allow(dead_code)]
            fn update(name: &str, versions: &[&str], body: impl FnOnce(&ConfiguredNode, &Bundles)) {
                let node = configured();
                let bundles = Bundles::built(node, versions);
                scenario::run(BOARD, name, || body(node, &bundles));
            }

            $(scenario!($scenario);)*
        }
    )*};
}

/// One scenario's test, by name, inside a board's module.
macro_rules! scenario {
    (reproducible_image) => {
        #[test]
        fn reproducible_image() {
            scenario::timed(BOARD, "reproducible_image", || images::reproducible(BOARD));
        }
    };
    (first_boot) => {
        #[test]
        fn first_boot() {
            configured();
        }
    };
    (reboot) => {
        #[test]
        fn reboot() {
            on_node("reboot", power::reboot);
        }
    };
    (power_button_and_clock) => {
        #[test]
        fn power_button_and_clock() {
            on_node("power_button_and_clock", power::power_button_and_clock);
        }
    };
    (power_cut) => {
        #[test]
        fn power_cut() {
            on_node("power_cut", power::power_cut);
        }
    };
    (pods) => {
        #[test]
        fn pods() {
            on_node("pods", pods::scenario);
        }
    };
    (netboot) => {
        #[test]
        fn netboot() {
            on_node("netboot", netboot::scenario);
        }
    };
    (update_refused) => {
        #[test]
        fn update_refused() {
            update("update_refused", &["0.2.0"], updates::refused);
        }
    };
    (update_a_to_b_and_back) => {
        #[test]
        fn update_a_to_b_and_back() {
            let versions = [updates::IMAGE_VERSION, "0.2.0"];
            update("update_a_to_b_and_back", &versions, updates::a_to_b_and_back);
        }
    };
    (update_bad_kernel) => {
        #[test]
        fn update_bad_kernel() {
            update("update_bad_kernel", &["0.3.0"], updates::bad_kernel);
        }
    };
    (update_unhealthy) => {
        #[test]
        fn update_unhealthy() {
            update("update_unhealthy", &["0.3.1", "0.2.0"], updates::unhealthy);
        }
    };
    (update_power_cut_while_writing) => {
        #[test]
        fn update_power_cut_while_writing() {
            update("update_power_cut_while_writing", &["0.2.0"], updates::power_cut_while_writing);
        }
    };
}

// Every scenario on the PC. The ARM boards, emulated instruction by instruction (and their
// machined cross-built), run what their issue asks of them within CI's budget: the first boot
// (maintenance API, config over mTLS, the web pod), a bundle for the wrong architecture
// refused, A -> B with the pod serving on its hostPort, a kernel that panics rolled back by
// U-Boot's counter, and (arm64) an unhealthy system given up by machined through U-Boot's
// environment and a diskless boot through U-Boot's TFTP. The rest is board-independent
// machined code the PC's scenarios cover.
qemu_scenarios! {
    generic_x86_64 => cairn_tests::boards::GENERIC_X86_64: [
        reproducible_image, first_boot, reboot, power_button_and_clock, power_cut, pods, netboot,
        update_refused, update_a_to_b_and_back, update_bad_kernel, update_unhealthy,
        update_power_cut_while_writing,
    ],
    qemu_arm64 => cairn_tests::boards::QEMU_ARM64: [
        first_boot, netboot, update_refused, update_a_to_b_and_back, update_bad_kernel,
        update_unhealthy,
    ],
    qemu_armv7 => cairn_tests::boards::QEMU_ARMV7: [
        first_boot, update_refused, update_a_to_b_and_back, update_bad_kernel,
    ],
}
