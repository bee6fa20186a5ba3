//! A damaged journal, seen from outside: a torn tail is cut with a warning
//! and the server starts; damage with valid records after it stops the
//! server with a message that names the file, the offset and the way out;
//! and the way out starts a new epoch, so no acknowledged seq is handed out
//! again and clients see a gap.

use std::path::{Path, PathBuf};

use crate::helpers::*;

/// Starts the binary on port 0 over `data_dir`, with extra environment.
async fn start_over(data_dir: &Path, env: &[(&str, &str)]) -> Started {
    start_binary(&["--data-dir", data_dir.to_str().unwrap()], env).await
}

/// Fills a journal with alice's join and ten acknowledged messages (seqs 1
/// to 11) and stops the server. Returns the epoch and the acknowledged
/// `(seq, text)` pairs.
async fn fill_journal(data_dir: &Path) -> (String, Vec<(u64, String)>) {
    let mut app = spawn_app_with(|c| {
        c.data_dir = Some(data_dir.to_owned());
        c.rate_limit = 0;
    })
    .await;
    let alice = app.join("alice").await;
    let session = alice["session"].as_str().unwrap().to_owned();
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let text = format!("m{i}");
        acknowledged.push((app.say(&session, &text).await, text));
    }
    app.shutdown().await;
    (alice["epoch"].as_str().unwrap().to_owned(), acknowledged)
}

/// The journal's only segment.
fn only_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.pop().unwrap()
}

/// Where each record of a segment starts: `u32 length | u32 CRC | payload`.
/// Record 0 is the checkpoint; record `n` holds the event with seq `n`.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    offsets
}

/// Flips a byte inside the payload of the record holding `seq`, and returns
/// where that record starts.
fn corrupt_record(segment: &Path, seq: usize) -> usize {
    let mut bytes = std::fs::read(segment).unwrap();
    let offset = record_offsets(&bytes)[seq];
    bytes[offset + 8 + 3] ^= 0x20;
    std::fs::write(segment, bytes).unwrap();
    offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_filled_tail_is_cut_with_a_warning_and_the_server_starts() {
    // Arrange: zeros after the last record, as a file system leaves them
    // after a crash that extended the file but lost the data.
    let dir = tempfile::tempdir().unwrap();
    let (epoch, acknowledged) = fill_journal(dir.path()).await;
    let segment = only_segment(dir.path());
    let whole = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.resize(bytes.len() + 4096, 0);
    std::fs::write(&segment, bytes).unwrap();

    // Act
    let started = start_over(dir.path(), &[]).await;

    // Assert
    let mut app = match started {
        Started::Running(app) => app,
        Started::Refused { stderr, .. } => panic!("the server refused to start:\n{stderr}"),
    };
    let warning = app
        .log_line_with(&["WARN", &segment.display().to_string(), &whole.to_string()])
        .await;
    assert!(warning.contains("torn"), "{warning}");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole, "cut");
    let (_, body) = app.get_json(&format!("/poll?since=0&epoch={epoch}")).await;
    assert_eq!(body["gap"], false);
    assert_eq!(body["epoch"], epoch.as_str());
    for (seq, text) in &acknowledged {
        assert_eq!(body["events"][*seq as usize - 1]["text"], text.as_str());
    }
    let bob = app.join("bob").await;
    let next = app.say(bob["session"].as_str().unwrap(), "after").await;
    assert_eq!(next, 13, "bob's join took 12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_the_last_segment_refuses_to_start_and_names_the_file_and_offset() {
    // Arrange: seq 5 is damaged; seqs 6 to 11, acknowledged, follow it.
    let dir = tempfile::tempdir().unwrap();
    fill_journal(dir.path()).await;
    let segment = only_segment(dir.path());
    let offset = corrupt_record(&segment, 5);
    let damaged = std::fs::read(&segment).unwrap();

    // Act
    let started = start_over(dir.path(), &[]).await;

    // Assert
    let Started::Refused { status, stderr } = started else {
        panic!("the server started on a journal damaged in the middle");
    };
    assert!(!status.success());
    assert!(
        stderr.contains(&segment.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("byte {offset}")),
        "names the offset {offset}: {stderr}"
    );
    assert!(stderr.contains("--journal-recover"), "{stderr}");
    assert_eq!(std::fs::read(&segment).unwrap(), damaged, "nothing was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_from_mid_segment_damage_starts_a_new_epoch_so_clients_see_a_gap() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let (epoch, acknowledged) = fill_journal(dir.path()).await;
    let highest = acknowledged.last().unwrap().0;
    let segment = only_segment(dir.path());
    corrupt_record(&segment, 5);

    // Act
    let started = start_over(dir.path(), &[("PUSHLAB_JOURNAL_RECOVER", "true")]).await;

    // Assert
    let Started::Running(app) = started else {
        panic!("the server did not start with PUSHLAB_JOURNAL_RECOVER");
    };
    let bob = app.join("bob").await;
    assert_ne!(bob["epoch"], epoch.as_str(), "a new epoch");
    let history: Vec<&str> = bob["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["m0", "m1", "m2"], "the chat before the damage");
    let (_, body) = app.get_json(&format!("/poll?since=8&epoch={epoch}")).await;
    assert_eq!(body["gap"], true, "a reader from the old epoch sees a gap");
    let next = app.say(bob["session"].as_str().unwrap(), "after").await;
    assert!(next > highest, "seq {next} was already acknowledged");
    let events = body["events"].as_array().unwrap();
    assert!(
        events.iter().all(|e| e["seq"].as_u64().unwrap() > highest),
        "no acknowledged seq is handed out again: {events:?}"
    );
    let moved_aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".damaged")
        })
        .count();
    assert_eq!(moved_aside, 1, "the damaged segment is kept aside");
}
