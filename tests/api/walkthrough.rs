//! docs/protocol.md, run as written: every ```console block's commands, in
//! the order of the page, against one fresh server with the walkthrough
//! setting, each answer checked against the page. The curl commands run as
//! they are, through bash; a websocat transcript is played over
//! tokio-tungstenite (typed lines sent, the others awaited). Ids, epochs and
//! timestamps are matched by shape, `…` stands for anything, and the
//! counters of `/stats` and `/traffic` by type.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::spawn_app_with;

/// The address the page's examples use.
const DOC_ADDR: &str = "127.0.0.1:8080";
/// How long a stream (`curl -N`) is read before it is cut.
const STREAM_READ: Duration = Duration::from_millis(1500);
/// How long a transcript waits for one frame.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// One `$ command` and the lines the page shows after it.
struct Example {
    command: String,
    output: Vec<String>,
}

/// Every console example of a markdown page, in order.
fn examples(markdown: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for line in markdown.lines() {
        if !in_console {
            in_console = line.trim() == "```console";
            continue;
        }
        if line.trim() == "```" {
            in_console = false;
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            examples.push(Example {
                command: command.trim_end_matches('\\').trim().to_owned(),
                output: Vec::new(),
            });
            continued = line.ends_with('\\');
        } else if continued {
            let example = examples
                .last_mut()
                .expect("a continuation follows a command");
            example.command.push(' ');
            example
                .command
                .push_str(line.trim().trim_end_matches('\\').trim());
            continued = line.ends_with('\\');
        } else if let Some(example) = examples.last_mut() {
            example.output.push(line.to_owned());
        }
    }
    examples
}

/// Whether `text` has the shape of a v4 UUID or an epoch (32 hex digits).
fn is_id(text: &str) -> bool {
    let hex = text.replace('-', "");
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Compares a documented JSON value with a real one.
fn same(
    expected: &Value,
    actual: &Value,
    key: &str,
    counters: bool,
    path: &str,
) -> Result<(), String> {
    let differ = || {
        Err(format!(
            "{path}: the page shows {expected}, the server said {actual}"
        ))
    };
    match (expected, actual) {
        (Value::String(e), _) if e == "…[]" => actual
            .is_array()
            .then_some(())
            .ok_or(())
            .or_else(|_| differ()),
        (Value::String(e), Value::String(_)) if e.ends_with('…') => Ok(()),
        (Value::String(e), Value::String(a)) if is_id(e) && is_id(a) && e.len() == a.len() => {
            Ok(())
        }
        (Value::Number(_), Value::Number(_)) if counters || key == "ts" || key == "now" => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            let (ek, ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            if ek != ak {
                return Err(format!(
                    "{path}: the page lists fields {ek:?}, the server sent {ak:?}"
                ));
            }
            for (k, v) in e {
                same(v, &a[k], k, counters, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                same(ev, av, key, counters, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => differ(),
    }
}

/// Parses a documented line as JSON, with `[…]` standing for any array.
fn documented_json(line: &str) -> Option<Value> {
    serde_json::from_str(&line.replace("[…]", "\"…[]\"")).ok()
}

/// Compares one documented output line with a real one.
fn same_line(expected: &str, actual: &str, counters: bool) -> Result<(), String> {
    let (prefix, json) = match expected.strip_prefix("data: ") {
        Some(rest) => ("data: ", rest),
        None => ("", expected),
    };
    if let (Some(e), Some(a)) = (documented_json(json), actual.strip_prefix(prefix)) {
        let a: Value = serde_json::from_str(a)
            .map_err(|_| format!("the page shows JSON {expected}, the server said {actual}"))?;
        return same(&e, &a, "", counters, "$");
    }
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "the page shows {expected:?}, the server said {actual:?}"
        ))
    }
}

fn trimmed(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// The shell's view of the variables set so far: `S='…'; P='…'; `.
fn prelude(vars: &BTreeMap<String, String>) -> String {
    vars.iter().map(|(k, v)| format!("{k}='{v}'; ")).collect()
}

/// Runs a shell command; a stream (`curl -N`) is cut after [`STREAM_READ`].
fn run_shell(script: &str, stream: bool) -> String {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash runs");
    if stream {
        std::thread::sleep(STREAM_READ);
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("the command ends");
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Plays a websocat transcript: typed lines are sent, the others awaited.
async fn play_websocket(url: &str, transcript: &[String]) -> Result<(), String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    for line in trimmed(transcript) {
        let parsed = documented_json(&line).ok_or(format!("not JSON: {line}"))?;
        let typed = parsed.get("seq").is_none()
            && matches!(
                parsed["type"].as_str(),
                Some("register" | "message" | "mousemove" | "leave")
            );
        if typed {
            socket
                .send(Message::text(line))
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let frame = loop {
            match tokio::time::timeout(FRAME_WAIT, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => break text.to_string(),
                Ok(Some(Ok(_))) => continue,
                other => return Err(format!("waiting for {line}: {other:?}")),
            }
        };
        same_line(&line, &frame, false)?;
    }
    let _ = socket.close(None).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_in_the_protocol_page_runs_as_written_and_answers_as_shown() {
    // Arrange: a fresh server with the walkthrough setting, and the page.
    let app = spawn_app_with(|config| config.walkthrough = true).await;
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
        .expect("docs/protocol.md is readable");
    let examples = examples(&page);
    assert!(
        examples.len() >= 15,
        "found only {} examples",
        examples.len()
    );
    let addr = app.addr.to_string();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();

    for example in examples {
        // Act
        let command = example.command.replace(DOC_ADDR, &addr);
        let counters = ["/stats", "/traffic"].iter().any(|p| command.contains(p));
        if let Some(rest) = command.strip_prefix("websocat ") {
            let url = rest.trim().trim_matches(|c| c == '\'' || c == '"');
            let url = vars.iter().fold(url.to_owned(), |url, (k, v)| {
                url.replace(&format!("${k}"), v)
            });
            play_websocket(&url, &example.output)
                .await
                .unwrap_or_else(|err| panic!("$ {}\n{err}", example.command));
            continue;
        }
        if let Some((name, inner)) = command
            .split_once("=$(")
            .filter(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase()))
        {
            let inner = inner.strip_suffix(')').expect("an assignment ends with )");
            let value = run_shell(&format!("{}{inner}", prelude(&vars)), false);
            assert!(
                !value.trim().is_empty(),
                "$ {} gave nothing",
                example.command
            );
            vars.insert(name.to_owned(), value.trim().to_owned());
            continue;
        }
        let (command, timed) = match command.strip_prefix("time ") {
            Some(rest) => (rest.to_owned(), true),
            None => (command, false),
        };
        let started = Instant::now();
        let stream = command.contains(" -sN ");
        let output = run_shell(&format!("{}{command}", prelude(&vars)), stream);
        let took = started.elapsed();

        // Assert
        let mut expected: Vec<String> = trimmed(&example.output)
            .iter()
            .map(|line| line.replace(DOC_ADDR, &addr))
            .collect();
        if timed {
            let real = expected.pop().expect("a timed example shows its time");
            let secs: f64 = real
                .trim_start_matches("real")
                .trim()
                .trim_start_matches("0m")
                .trim_end_matches('s')
                .parse()
                .expect("real 0mN.Ns");
            assert!(
                (took.as_secs_f64() - secs).abs() < 0.5,
                "$ {}: took {took:?}, the page says {secs} s",
                example.command
            );
        }
        let actual: Vec<String> = trimmed(&output.lines().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(
            expected.len(),
            actual.len(),
            "$ {}\nthe page shows:\n{}\nthe server said:\n{}",
            example.command,
            expected.join("\n"),
            actual.join("\n")
        );
        for (e, a) in expected.iter().zip(&actual) {
            same_line(e, a, counters).unwrap_or_else(|err| panic!("$ {}\n{err}", example.command));
        }
    }
}

#[test]
fn the_lectures_class_command_keeps_a_session_through_a_pause_between_typed_examples() {
    use clap::Parser as _;

    // Arrange: the command docs/lecture.md gives for starting a class.
    let lecture = include_str!("../../docs/lecture.md");
    let command = lecture
        .lines()
        .find(|line| line.starts_with("cargo run --release -- "))
        .expect("docs/lecture.md gives a command to start the server");
    let flags = command
        .trim_start_matches("cargo run --release -- ")
        .split_whitespace();

    // Act
    let config = pushlab::Config::try_parse_from(std::iter::once("pushlab").chain(flags))
        .expect("the lecture's command parses");

    // Assert: a pause of a minute or two while talking keeps the session;
    // the default 10 s does not.
    assert!(
        config.presence_timeout() >= Duration::from_secs(300),
        "the lecture's command ends a session after {:?} without a request: {command}",
        config.presence_timeout()
    );
}
