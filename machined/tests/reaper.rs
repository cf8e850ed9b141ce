//! Exit delivery, in a process of its own (it becomes a subreaper, as PID 1 is one): a child
//! that double-forks and exits gets its own status to whoever started it, and the orphan it
//! leaves behind is reaped by nobody's request.

use std::process::Command;
use std::time::Duration;

use machined::system::reaper::Reaper;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

#[tokio::test]
async fn the_starter_gets_its_childs_status_and_orphans_are_reaped() {
    // Orphans of this process's descendants come to it, as they come to PID 1 on a node.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let reaper = Reaper::new();
    tokio::spawn(reaper.clone().run());

    // The child leaves a grandchild running and exits 7 at once; the grandchild, reparented
    // to us, exits 3 a little later.
    let spawned = reaper
        .spawn(Command::new("sh").args(["-c", "sh -c 'sleep 0.3; exit 3' & exit 7"]))
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(spawned.child.id() as i32);
    let status =
        tokio::time::timeout(Duration::from_secs(10), spawned.exit).await.unwrap().unwrap();
    assert_eq!(status, WaitStatus::Exited(pid, 7));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reaper.orphans_reaped() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reaper.orphans_reaped(), 1, "the orphan was not reaped");
    // No zombie is left: there are no children at all.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    assert_eq!(waitid(Id::All, flags), Err(nix::errno::Errno::ECHILD));

    // Many children exiting at once each get their own status.
    let spawned: Vec<_> = (0..20)
        .map(|i| reaper.spawn(Command::new("sh").args(["-c", &format!("exit {i}")])).unwrap())
        .collect();
    for (i, spawned) in spawned.into_iter().enumerate() {
        let pid = nix::unistd::Pid::from_raw(spawned.child.id() as i32);
        let status = tokio::time::timeout(Duration::from_secs(10), spawned.exit).await.unwrap();
        assert_eq!(status.unwrap(), WaitStatus::Exited(pid, i as i32));
    }

    // A command run to its end gives its status and its standard error, not its output.
    let (status, errors) = reaper
        .output(Command::new("sh").args(["-c", "echo out; echo 'no such disk' >&2; exit 5"]))
        .await
        .unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 5)), "{status:?}");
    assert_eq!(errors, "no such disk\n");
}
