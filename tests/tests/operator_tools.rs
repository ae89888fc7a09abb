//! The commands an operator runs beside the scheduler: `--explain` (which
//! class each running thread would get) and `--help-stats`.

use std::process::{Command, Stdio};

use rthulhu_tests::{host, plugin, stderr};

#[test]
fn explain_names_the_strategy_each_thread_gets_and_strategies_that_match_nothing() {
    let mut child = Command::new("sleep")
        .arg("60")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting sleep");
    let dir = std::env::temp_dir().join(format!("rthulhu-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("strategy.toml");
    std::fs::write(
        &config,
        format!(
            "[scheduler]\nplugin = {:?}\n[plugin]\n\
             [[plugin.strategy]]\nname = \"sleepers\"\ncomm = '^sleep$'\npriority = 2\n\
             [[plugin.strategy]]\nname = \"ghosts\"\ncomm = '^no-such-task$'\n",
            plugin("strategy")
        ),
    )
    .unwrap();
    let out = host(&["--explain", config.to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{text}", stderr(&out));
    let pid = child.id().to_string();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(pid.as_str()))
        .unwrap_or_else(|| panic!("no line for pid {pid}:\n{text}"));
    assert!(
        line.contains("sleep") && line.contains("sleepers"),
        "{line}"
    );
    // Our own thread is no sleeper.
    let me = std::process::id().to_string();
    let mine = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(me.as_str()))
        .unwrap_or_else(|| panic!("no line for pid {me}:\n{text}"));
    assert!(mine.contains("unmatched"), "{mine}");
    assert!(
        text.contains("sleepers: ") && text.contains("comm =~ ^sleep$ → priority 2"),
        "{text}"
    );
    assert!(text.contains("matching nothing now: ghosts"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_stats_describes_every_field_the_socket_serves() {
    let out = host(&["--help-stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let snapshot = rthulhu::stats::Snapshot {
        classes: vec![Default::default()],
        ..Default::default()
    };
    // Every key of a served snapshot, nested ones too, has a line.
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push(k.clone());
                keys(v, out);
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys(&serde_json::to_value(&snapshot).unwrap(), &mut all);
    assert!(all.len() > 30, "{all:?}");
    for k in all {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(k.as_str())),
            "{k} is not described:\n{text}"
        );
    }
}
