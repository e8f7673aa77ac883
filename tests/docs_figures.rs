//! The figures in README.md and docs/ are the committed raw data's: every
//! block between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->` is
//! what `bench/render.py` makes of the files under `bench/results/` (which
//! the measuring scripts wrote, with their command and commit), and no
//! measured-looking figure stands outside a block. And the check is shown
//! to fail, on a copy of the docs, when a figure is changed by hand or a
//! figure without data is added.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `bench/render.py --check` on the tree at `root`.
fn check(root: &Path) -> Output {
    Command::new("python3")
        .arg(repo().join("bench/render.py"))
        .args(["--check", "--root"])
        .arg(root)
        .output()
        .expect("python3 is needed by this test (see the README: what the tests need)")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_docs_quote_the_committed_results() {
    let output = check(&repo());
    assert!(
        output.status.success(),
        "the docs' figures do not match bench/results/ (python3 bench/render.py \
         rewrites them from the data):\n{}",
        stderr(&output)
    );
}

/// A copy of the docs and the data, in a fresh directory.
fn copy_of_the_docs() -> PathBuf {
    let root = std::env::temp_dir().join(format!("natter-docs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for dir in ["docs", "bench/results"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, root.join(dir).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    std::fs::copy(repo().join("README.md"), root.join("README.md")).unwrap();
    root
}

fn edit(path: &Path, change: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, change(text)).unwrap();
}

#[test]
fn a_figure_changed_by_hand_or_added_without_data_fails_the_check() {
    let root = copy_of_the_docs();
    assert!(check(&root).status.success(), "{}", stderr(&check(&root)));

    // A digit changed inside README's block of figures.
    let readme = root.join("README.md");
    let original = std::fs::read_to_string(&readme).unwrap();
    edit(&readme, |text| {
        let block = text.find("<!-- figures:how-fast -->").expect("a block");
        let digit = block + text[block..].find("p50 of ").unwrap() + "p50 of ".len();
        let changed = if &text[digit..=digit] == "9" {
            "1"
        } else {
            "9"
        };
        format!("{}{changed}{}", &text[..digit], &text[digit + 1..])
    });
    let output = check(&root);
    assert!(!output.status.success(), "a changed figure passed");
    assert!(stderr(&output).contains("how-fast"), "{}", stderr(&output));
    std::fs::write(&readme, original).unwrap();

    // A measured-looking figure outside every block.
    edit(&root.join("docs/PERFORMANCE.md"), |text| {
        text + "\nOn a good day the p50 is 0.42 ms.\n"
    });
    let output = check(&root);
    assert!(!output.status.success(), "a figure without data passed");
    assert!(stderr(&output).contains("0.42 ms"), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&root);
}
