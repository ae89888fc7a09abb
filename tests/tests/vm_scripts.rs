//! The VM suite's scripts are present, runnable, and the freeze reproducer is
//! kept exactly as it was handed over (the trigger is timing-sensitive).

use std::os::unix::fs::PermissionsExt;

use rthulhu_tests::repo;

#[test]
fn the_staggered_hogs_reproducer_is_kept_byte_for_byte() {
    let ours = repo().join("tests/vm/staggered-hogs.sh");
    let handed = repo().join("../shared/repro/staggered-hogs.sh");
    let handed = std::fs::read(&handed).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ must sit beside the repository)",
            handed.display()
        )
    });
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        handed,
        "{} differs",
        ours.display()
    );
}

#[test]
fn vm_scripts_are_executable() {
    for f in [
        "tests/vm/tests",
        "tests/vm/run",
        "tests/vm/suite.sh",
        "tests/vm/liveness.sh",
    ] {
        let mode = std::fs::metadata(repo().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{f} is not executable");
    }
}
