//! The loop a learner runs, run for real: `learn` keeps the learner's
//! edits; `check` passes every reference chapter, fails each chapter's
//! start (the chapter before) first on the lesson's first promise, and
//! names the likely mistake when a classic one is made on purpose.
//!
//! The checklists of the start and the end are also the book's "Your turn"
//! outputs (`book/checklists/`): these tests keep them fresh. After a change
//! to the promises, `UPDATE_BOOK_CHECKLISTS=1 cargo nextest run -p xtask
//! exercises` writes them again.

use super::*;
use crate::learn::{self, Chapter};

/// The binary of a chapter as the workspace builds it (`cargo nextest run
/// --workspace` builds every binary before the tests).
fn reference_binary(root: &Path, chapter: &Chapter) -> PathBuf {
    let binary = crate::target_dir(root)
        .join("debug")
        .join(chapter.package().unwrap());
    assert!(
        binary.is_file(),
        "{} is missing: build it first (`cargo build --workspace`)",
        binary.display()
    );
    binary
}

/// Compares `text` with the book's `file`, or writes it when asked to.
fn fresh(file: &Path, text: &str) {
    if std::env::var_os("UPDATE_BOOK_CHECKLISTS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        on_disk == text,
        "{} is stale: run `UPDATE_BOOK_CHECKLISTS=1 cargo nextest run -p xtask exercises` \
         and commit it; it should be:\n{text}",
        file.display()
    );
}

/// How many `*.snap.new` files `dir` holds.
fn snap_new_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".snap.new"))
            .count()
    })
}

#[test]
fn every_reference_chapter_holds_and_its_start_breaks_the_lesson_first() {
    let root = crate::workspace_root();
    for number in 1..=5 {
        let chapter = Chapter::find(&root, number).unwrap();
        let before = Chapter::find(&root, number - 1).unwrap();

        let (promises, end) =
            check_binary(&root, &chapter, &reference_binary(&root, &chapter), 3).unwrap();
        let end_list = checklist(&promises, &end, number, false);
        assert!(
            end.iter().all(|v| *v == Verdict::Holds),
            "chapter {number:02} itself must keep all its promises:\n{}",
            checklist(&promises, &end, number, true)
        );

        let pending = pending_snapshots(&root, &chapter);
        let _ = std::fs::remove_dir_all(&pending);
        let (_, start) =
            check_binary(&root, &chapter, &reference_binary(&root, &before), 3).unwrap();
        // A snapshot of the start that differs is kept under workshop/
        // (chapters 01 and 02's starts leave their progress report there),
        // never beside the reference.
        assert_eq!(
            snap_new_files(&chapter.dir.join("tests/e2e/snapshots")),
            0,
            "a check wrote into chapter {number:02}'s snapshots"
        );
        let first_broken = promises
            .iter()
            .zip(&start)
            .find(|(_, verdict)| **verdict != Verdict::Holds)
            .map(|(promise, _)| promise.test);
        let lesson_first = promises.iter().find(|p| p.lesson == number).map(|p| p.test);
        assert!(
            lesson_first.is_some(),
            "chapter {number:02} promises nothing of its own"
        );
        assert_eq!(
            first_broken,
            lesson_first,
            "chapter {number:02}'s start must first break its lesson's first promise:\n{}",
            checklist(&promises, &start, number, true)
        );

        let book = root.join("book/checklists");
        fresh(
            &book.join(format!("{}-start.txt", chapter.dir_name)),
            &checklist(&promises, &start, number, false),
        );
        fresh(
            &book.join(format!("{}-end.txt", chapter.dir_name)),
            &end_list,
        );
    }
}

#[test]
fn learn_twice_keeps_the_learners_edit() {
    let root = crate::workspace_root();
    let workshops = tempfile::tempdir().unwrap();
    let chapter = Chapter::find(&root, 1).unwrap();
    learn::start(&root, workshops.path(), &chapter, false).unwrap();
    let main = workshops.path().join(&chapter.dir_name).join("src/main.rs");
    let chapter_00 =
        std::fs::read_to_string(root.join("chapters/00-baseline/src/main.rs")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        chapter_00,
        "01 starts from 00"
    );

    std::fs::write(&main, "// my work\n").unwrap();
    learn::start(&root, workshops.path(), &chapter, false).unwrap();
    assert_eq!(std::fs::read_to_string(&main).unwrap(), "// my work\n");

    learn::start(&root, workshops.path(), &chapter, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        chapter_00,
        "--force starts over"
    );
}

/// A classic mistake, made on purpose in a copy of a reference chapter.
struct Mistake {
    chapter: u8,
    name: &'static str,
    file: &'static str,
    correct: &'static str,
    wrong: &'static str,
    /// The promise it breaks, and a word its diagnosis must say.
    breaks: &'static str,
    diagnosis_says: &'static str,
}

const MISTAKES: [Mistake; 3] = [
    Mistake {
        chapter: 3,
        name: "no-propagator",
        file: "src/telemetry.rs",
        correct: "    global::set_text_map_propagator(propagation::W3cTraceContext::default());\n",
        wrong: "",
        breaks: "traces::the_trace_context_crosses_grpc_both_ways",
        diagnosis_says: "propagator",
    },
    Mistake {
        chapter: 3,
        name: "no-flush",
        file: "src/telemetry.rs",
        correct: "        traces::shutdown(self.tracer_provider).await;\n",
        wrong: "",
        breaks: "traces::sigterm_sends_the_spans_still_queued",
        diagnosis_says: "shutdown",
    },
    Mistake {
        chapter: 4,
        name: "no-extract",
        file: "src/telemetry/messaging.rs",
        correct: "    let producer = producer_context(message);\n",
        wrong: "    let producer = opentelemetry::Context::new();\n",
        breaks: "messaging::by_default_one_order_is_one_trace_across_nats",
        diagnosis_says: "extracted",
    },
];

#[test]
fn a_classic_mistake_gets_its_diagnosis() {
    let root = crate::workspace_root();
    let mutants = crate::target_dir(&root).join("exercise-mistakes");
    for mistake in &MISTAKES {
        let chapter = Chapter::find(&root, mistake.chapter).unwrap();
        let dir = mutants.join(mistake.name);
        let package = format!("mistake-{}", mistake.name);
        learn::create(&root, &chapter.dir, &dir, &package).unwrap();
        let file = dir.join(mistake.file);
        let code = std::fs::read_to_string(&file).unwrap();
        assert!(
            code.contains(mistake.correct),
            "{}: the line to break moved",
            mistake.name
        );
        std::fs::write(&file, code.replacen(mistake.correct, mistake.wrong, 1)).unwrap();
        let binary = build_workshop(&root, &dir, &package).unwrap();

        let promise = testkit::contracts::promises(mistake.chapter)
            .into_iter()
            .find(|p| p.test == mistake.breaks)
            .unwrap_or_else(|| panic!("no promise {}", mistake.breaks));
        let tests = test_binary(&root, &chapter).unwrap();
        let pending = pending_snapshots(&root, &chapter);
        let verdict = judge(&tests, &binary, &pending, &[promise], 1).remove(0);
        assert_ne!(
            verdict,
            Verdict::Holds,
            "{}: {} still holds",
            mistake.name,
            mistake.breaks
        );
        assert!(
            promise.diagnosis.contains(mistake.diagnosis_says),
            "{}: the diagnosis of {} should name the {}: {}",
            mistake.name,
            mistake.breaks,
            mistake.diagnosis_says,
            promise.diagnosis
        );
    }
}
