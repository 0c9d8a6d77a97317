//! The `mqws` command line: `check-config` output and exit status 2 with a one-line error.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn mqws() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqws"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c.current_dir(std::env::temp_dir());
    c
}

#[test]
fn check_config_prints_effective_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[ws]\nhello_timeout = \"3s\"\n[http]\nlisten = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let out = mqws()
        .args(["check-config", "--config"])
        .arg(&file)
        .args(["--data-dir", "/tmp/somewhere"])
        .env("MQWS_HTTP__LISTEN", "127.0.0.1:9001")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hello_timeout = \"3s\""), "{text}");
    assert!(
        text.contains("listen = \"127.0.0.1:9001\""),
        "env beats file: {text}"
    );
    assert!(text.contains("dir = \"/tmp/somewhere\""), "{text}");
}

#[test]
fn invalid_values_exit_2_with_one_line() {
    /// Arguments, environment, and the key the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &["check-config"],
            &[("MQWS_WS__HELLO_TIMEOUT", "soon")],
            "ws.hello_timeout",
        ),
        (
            &["check-config", "--http-listen", "nowhere"],
            &[],
            "http.listen",
        ),
        (&["serve", "--mqtt-listen", "1.2.3"], &[], "broker.listen"),
    ];
    for (args, env, key) in cases {
        let out = mqws()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn check_config_output_is_a_valid_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = mqws().arg("check-config").output().unwrap();
    assert!(first.status.success());
    let file = dir.path().join("effective.toml");
    std::fs::write(&file, &first.stdout).unwrap();
    let again = mqws()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(first.stdout, again.stdout, "round trip");
}

#[test]
fn check_config_masks_secrets_and_password_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    std::fs::write(
        &file,
        format!("[auth]\nmode = \"jwt\"\n[auth.jwt]\nsecret = \"do-not-print-me\"\n[[broker.users]]\nusername = \"r\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let out = mqws()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("do-not-print-me"), "{text}");
    assert!(!text.contains("argon2id"), "{text}");
    assert!(
        text.contains("secret = \"***\"") && text.contains("password_hash = \"***\""),
        "{text}"
    );
}
