//! Every promise the chapters make, as a contract: one public async
//! function that takes the [`Subject`](crate::Subject) under test and
//! panics, saying what it saw, when the promise does not hold. A module per
//! lesson; [`promises`] lists them all in teaching order, each with its
//! claim, the likely mistake when it fails, and the book section to read.
//!
//! A chapter's e2e tests are these contracts, one `#[tokio::test]` each,
//! made by [`promise_tests!`](crate::promise_tests) from the same registry:
//! chapter 03's tests are the promises of lessons 0 to 3, named
//! `<module>::<contract>` as [`Promise::test`] names them. `cargo xtask
//! check NN` runs them one by one against a learner's build. Contracts judge
//! what the services do, never the crate's name or its module paths.

pub mod faults;
pub mod flow;
pub mod launcher;
pub mod logs;
pub mod messaging;
pub mod metrics;
pub mod production;
pub mod profiling;
pub mod progress;
pub mod rejections;
pub mod traces;

/// One promise of a chapter, as `cargo xtask check` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    /// The test's name in the chapter's e2e binary: `module::function`.
    pub test: &'static str,
    /// The chapter that introduced it.
    pub lesson: u8,
    /// One line: what holds.
    pub claim: &'static str,
    /// In plain words, the likely mistake when it does not.
    pub diagnosis: &'static str,
    /// The book page and anchor that explain it.
    pub section: &'static str,
}

/// Makes, from the promises written once in `registry.rs`, both
/// [`promises`] and the macro `__lesson_tests!` that
/// [`promise_tests!`](crate::promise_tests) expands for each lesson (`$d`
/// is a `$`, for the inner macro's own variables).
macro_rules! define_promises {
    ($d:tt $(
        $lesson:tt {
            $( $module:ident {
                $( $test:ident {
                    claim: $claim:literal,
                    diagnosis: $diagnosis:literal,
                    section: $section:literal $(,)?
                } )*
            } )*
        }
    )*) => {
        /// Every promise of chapter `chapter` (6 is `final`): the earlier
        /// chapters' first, then its own, each lesson's in the order its
        /// page teaches them.
        pub fn promises(chapter: u8) -> Vec<$crate::contracts::Promise> {
            let all = [$($($($crate::contracts::Promise {
                test: concat!(stringify!($module), "::", stringify!($test)),
                lesson: $lesson,
                claim: $claim,
                diagnosis: $diagnosis,
                section: $section,
            },)*)*)*];
            all.into_iter().filter(|p| p.lesson <= chapter).collect()
        }

        /// The tests of one lesson's promises, for `promise_tests!`.
        #[doc(hidden)]
        #[macro_export]
        macro_rules! __lesson_tests {
            $(($lesson, $d subject:ident) => {
                $(pub mod $module {
                    $(#[tokio::test(flavor = "multi_thread")]
                    async fn $test() {
                        $d crate::contracts::$module::$test(&super::$d subject()).await;
                    })*
                })*
            };)*
        }
    };
}

mod registry;

pub use registry::promises;

/// A chapter's e2e tests, in its `tests/e2e/main.rs`:
/// `promise_tests!(binary: "ch03-grpc-tracing", lessons: 0 1 2 3)` makes a
/// `#[tokio::test]` of every promise of lessons 0 to 3, each calling its
/// contract with the chapter's [`Subject`](crate::Subject) (its binary
/// `env!("CARGO_BIN_EXE_<binary>")` unless `$CHAPTER_BIN` names another),
/// plus a test that the lessons listed are every lesson up to the
/// chapter's own.
#[macro_export]
macro_rules! promise_tests {
    (binary: $binary:literal, lessons: $($lesson:tt)+) => {
        /// The chapter under test.
        fn subject() -> $crate::Subject {
            $crate::Subject::new(
                env!(concat!("CARGO_BIN_EXE_", $binary)),
                env!("CARGO_MANIFEST_DIR"),
            )
        }

        $($crate::__lesson_tests!($lesson, subject);)+

        #[test]
        fn the_tests_are_the_promises_of_every_lesson_so_far() {
            $crate::contracts::assert_lessons(&subject(), &[$($lesson),+]);
        }
    };
}

/// Fails unless `lessons` are those of the registry's promises up to the
/// subject's chapter, each once, in order.
pub fn assert_lessons(subject: &crate::Subject, lessons: &[u8]) {
    let mut expected: Vec<u8> = promises(subject.chapter())
        .iter()
        .map(|p| p.lesson)
        .collect();
    expected.dedup();
    assert_eq!(
        lessons, expected,
        "{} runs the promises of every lesson up to its own",
        subject.name
    );
}
