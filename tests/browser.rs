//! The web chat in a real browser: `natter serve` as a user starts it,
//! two headless Chromium windows driven over WebDriver (chromedriver), and
//! what a person would check: signing in (and being told a name is taken),
//! inviting, accepting, chatting, markup shown as text, and recovering from
//! a dropped connection with name, status and conversation intact; then
//! an account: signing up, a reload that keeps it signed in (and in its
//! conversation), signing out (a reload then shows the form), a wrong
//! password, and signing in again.
//!
//! Needs `/usr/bin/chromium` and `chromedriver` (Debian: `chromium`,
//! `chromium-driver`; `.ci/install-browser.sh` installs them). The harness
//! is libtest-mimic (see `crates/proto/tests/support/external.rs`): without
//! them the test is listed as ignored, which nextest counts as skipped in
//! its summary, except under CI, where it runs and fails; with them, any
//! failure fails. An operator's notice (`natter admin broadcast`) must show
//! on both pages as a toast (`target/browser-notice.png`). Screenshots go
//! to `target/browser-chat.png` (desktop width) and
//! `target/browser-chat-phone.png` (phone width).

#[path = "../crates/proto/tests/support/external.rs"]
mod external;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
/// How long anything a person would wait for may take.
const PATIENCE: Duration = Duration::from_secs(15);
const MARKUP: &str = "<script>alert(1)</script><b>x</b>";

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let browser = browser();
    let trials = vec![external::trial_needing(
        "two_browsers_sign_in_invite_chat_and_recover",
        &browser,
        |chromedriver| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(two_browsers_sign_in_invite_chat_and_recover(chromedriver))
        },
    )];
    libtest_mimic::run(&args, trials).exit();
}

/// chromedriver's path when both it and Chromium are installed.
fn browser() -> Result<PathBuf, String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} is not installed (bash .ci/install-browser.sh)"
        ));
    }
    CHROMEDRIVER
        .iter()
        .find(|p| Path::new(p).exists())
        .map(PathBuf::from)
        .ok_or_else(|| "chromedriver is not installed (bash .ci/install-browser.sh)".into())
}

async fn two_browsers_sign_in_invite_chat_and_recover(chromedriver: &Path) {
    let server = Natter::start();
    let driver = ChromeDriver::start(chromedriver);
    let mut pages = Vec::new();
    let mut outcome = Ok(());
    for (name, size) in [("alice", (1100, 760)), ("bob", (400, 820))] {
        match driver.session(name, size).await {
            Ok(page) => pages.push(page),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    if let [alice, bob] = &pages[..] {
        outcome = scenario(&server.web_url, &server.admin_socket, alice, bob).await;
        if outcome.is_ok() {
            outcome = account_scenario(&server.chat_addr, alice, bob).await;
        }
    }
    // Close the windows whatever happened, so no browser outlives the test.
    for page in pages {
        let _ = page.client.close().await;
        let _ = std::fs::remove_dir_all(&page.profile);
    }
    drop(driver);
    drop(server);
    outcome.expect("browser scenario");
}

async fn scenario(url: &str, admin_socket: &Path, alice: &Page, bob: &Page) -> anyhow::Result<()> {
    alice.sign_in(url, "alice").await?;

    // A taken name is reported in place, and the form stays usable.
    bob.open(url).await?;
    bob.type_into("#name", "ALICE").await?;
    bob.click("#signin-button").await?;
    bob.wait_for(
        "!document.querySelector('#signin-error').hidden",
        "name-taken error",
    )
    .await?;
    let error = bob.text("#signin-error").await?;
    ensure!(
        error.to_lowercase().contains("alice"),
        "error shown: {error:?}"
    );
    bob.screenshot(&target_dir().join("browser-signin-error-phone.png"))
        .await?;
    bob.sign_in(url, "bob").await?;

    // Alice finds Bob with the search (the list shows only people in her
    // conversations and those she found) and starts a chat.
    alice.type_into("#people-search", "bo").await?;
    alice
        .wait_for(
            r#"document.querySelector('#people input[value="bob"]')"#,
            "bob online",
        )
        .await?;
    alice.click(r#"#people input[value="bob"]"#).await?;
    alice.click("#start").await?;
    alice
        .wait_for(
            "!document.querySelector('#chat-view').hidden",
            "alice's new chat open",
        )
        .await?;

    // Bob (on a phone-width window) accepts the invitation.
    bob.wait_for("document.querySelector('#invites .accept')", "invitation")
        .await?;
    let invite = bob.text("#invites .invite-text").await?;
    ensure!(invite.contains("alice"), "invitation text {invite:?}");
    bob.click("#invites .accept").await?;
    bob.wait_for(
        "!document.querySelector('#chat-view').hidden",
        "bob's chat open",
    )
    .await?;
    alice
        .wait_for(
            "document.querySelector('#chat-members').textContent.includes('bob')",
            "bob among alice's members",
        )
        .await?;

    alice.say("hello bob").await?;
    bob.wait_for_message("alice", "hello bob").await?;
    bob.say(MARKUP).await?;
    alice.wait_for_message("bob", MARKUP).await?;

    // The markup is text: no element was made from it, no script ran.
    let made = alice
        .eval("return document.querySelectorAll('#messages b, #messages script').length")
        .await?;
    ensure!(made == json!(0), "elements created from a message: {made}");
    ensure!(
        alice.client.get_alert_text().await.is_err(),
        "an alert is open"
    );

    // An operator's notice (`natter admin broadcast`) shows on every page
    // as a toast, not as a conversation.
    let notice = "maintenance at 22:00 UTC, back by 22:15";
    let out = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["admin", "--admin-socket"])
        .arg(admin_socket)
        .args(["broadcast", notice])
        .output()?;
    ensure!(out.status.success(), "natter admin broadcast: {out:?}");
    for page in [alice, bob] {
        page.wait_for(
            &format!(
                "!document.querySelector('#toast').hidden && \
                 document.querySelector('#toast').textContent === 'Notice from the server: {notice}'"
            ),
            "the notice's toast",
        )
        .await?;
    }
    alice
        .screenshot(&target_dir().join("browser-notice.png"))
        .await?;
    let convs = alice
        .eval("return document.querySelectorAll('#convs .conv').length")
        .await?;
    ensure!(
        convs == json!(1),
        "a conversation made for the notice: {convs}"
    );

    // Alice goes busy, loses her connection, and comes back on her own.
    alice.click("#status-select option[value=busy]").await?;
    bob.click("#back").await?;
    bob.wait_for(
        r#"[...document.querySelectorAll('#people .person')].some(p => p.textContent.includes('alice') && p.textContent.includes('busy'))"#,
        "alice busy in bob's list",
    )
    .await?;
    alice
        .eval("window.natter.dropConnection(); return true")
        .await?;
    alice
        .wait_for(
            "document.querySelector('#conn').dataset.state === 'waiting'",
            "offline shown",
        )
        .await?;
    bob.wait_for(
        r#"![...document.querySelectorAll('#people .person-name')].some(p => p.textContent === 'alice')"#,
        "alice gone from bob's list",
    )
    .await?;
    alice
        .wait_for(
            "document.querySelector('#conn').dataset.state === 'open'",
            "reconnected",
        )
        .await?;
    bob.wait_for(
        r#"[...document.querySelectorAll('#people .person')].some(p => p.textContent.includes('alice') && p.textContent.includes('busy'))"#,
        "alice back, still busy",
    )
    .await?;
    bob.click("#convs .conv").await?;
    bob.wait_for(
        "[...document.querySelectorAll('#messages .sys')].some(s => s.textContent === 'alice joined')",
        "alice rejoined the conversation",
    )
    .await?;
    alice
        .wait_for(
            "!document.querySelector('#send').disabled",
            "composer usable again",
        )
        .await?;
    alice.say("back again").await?;
    bob.wait_for_message("alice", "back again").await?;
    bob.say("welcome back").await?;
    alice.wait_for_message("bob", "welcome back").await?;

    let target = target_dir();
    alice.screenshot(&target.join("browser-chat.png")).await?;
    bob.screenshot(&target.join("browser-chat-phone.png"))
        .await?;

    // A second chat: Bob dismisses the invitation, then finds it again
    // with Browse and joins; a message elsewhere shows as unread.
    bob.click("#back").await?;
    alice.click(r#"#people input[value="bob"]"#).await?;
    alice.click("#start").await?;
    bob.wait_for(
        "document.querySelector('#invites .dismiss')",
        "second invitation",
    )
    .await?;
    bob.screenshot(&target.join("browser-invitation-phone.png"))
        .await?;
    bob.click("#invites .dismiss").await?;
    bob.wait_for(
        "document.querySelector('#invites-section').hidden",
        "invitation dismissed",
    )
    .await?;
    bob.click("#browse").await?;
    bob.wait_for(
        "document.querySelector('#browse-list button')",
        "joinable conversation",
    )
    .await?;
    bob.click("#browse-list button").await?;
    bob.wait_for(
        "document.querySelectorAll('#convs .conv').length === 2",
        "two conversations",
    )
    .await?;
    alice.click("#convs li:first-child .conv").await?;
    alice.say("over here").await?;
    bob.click("#back").await?;
    bob.wait_for(
        "[...document.querySelectorAll('#convs .conv')].some(c => c.querySelector('.badge')?.textContent === '1' && c.textContent.includes('over here'))",
        "unread badge on the first conversation",
    )
    .await?;
    bob.screenshot(&target.join("browser-list-phone.png"))
        .await?;

    // Signing out says GOODBYE: the others see Bob leave. Signing in again
    // opens a new connection.
    bob.click("#footer-sign-out").await?;
    bob.wait_for(
        "!document.querySelector('#signin').hidden",
        "sign-in form again",
    )
    .await?;
    alice
        .wait_for(
            r#"!document.querySelector('#people input[value="bob"]')"#,
            "bob gone from alice's list",
        )
        .await?;
    bob.wait_for(
        "document.querySelector('#conn').dataset.state === 'idle'",
        "not connected shown",
    )
    .await?;

    // Alice is now alone in both conversations. If she drops out too, the
    // server forgets them; coming back, she is told, and they are gone.
    alice
        .eval("window.natter.dropConnection(); return true")
        .await?;
    alice
        .wait_for(
            "document.querySelector('#conn').dataset.state === 'waiting'",
            "offline again",
        )
        .await?;
    alice
        .wait_for(
            "document.querySelector('#conn').dataset.state === 'open' && document.querySelectorAll('#convs .conv').length === 0",
            "ended conversations removed after the reconnect",
        )
        .await?;
    let toast = alice.text("#toast").await?;
    ensure!(toast.contains("ended"), "toast {toast:?}");
    bob.sign_in(url, "bob").await?;
    alice
        .wait_for(
            r#"document.querySelector('#people input[value="bob"]')"#,
            "bob back",
        )
        .await?;
    Ok(())
}

/// Bob's window (phone width, signed in as a guest) signs up as carol;
/// alice (a guest) starts a chat with her.
async fn account_scenario(chat_addr: &str, alice: &Page, bob: &Page) -> anyhow::Result<()> {
    const PASSWORD: &str = "correct horse";
    let carol = bob;
    carol.click("#footer-sign-out").await?;
    carol
        .wait_for("!document.querySelector('#signin').hidden", "sign-in form")
        .await?;
    carol.click("#signup-toggle").await?;
    carol
        .wait_for(
            "document.querySelector('#signin-button').textContent === 'Create account'",
            "the sign-up form",
        )
        .await?;
    carol.clear("#name").await?;
    carol.type_into("#name", "carol").await?;
    carol.type_into("#password", PASSWORD).await?;
    carol
        .screenshot(&target_dir().join("browser-signup-phone.png"))
        .await?;
    carol.click("#signin-button").await?;
    carol.wait_signed_in_as("carol").await?;
    // The session is in a cookie the page's scripts cannot read.
    let cookies = carol.eval("return document.cookie").await?;
    ensure!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("natter_session"),
        "the session cookie is readable by scripts: {cookies}"
    );

    // Alice starts a chat with carol, who accepts it.
    alice.clear("#people-search").await?;
    alice.type_into("#people-search", "ca").await?;
    alice
        .wait_for(
            r#"document.querySelector('#people input[value="carol"]')"#,
            "carol online",
        )
        .await?;
    alice.click(r#"#people input[value="carol"]"#).await?;
    alice.click("#start").await?;
    carol
        .wait_for(
            "document.querySelector('#invites .accept')",
            "invitation to carol",
        )
        .await?;
    carol.click("#invites .accept").await?;
    carol
        .wait_for(
            "!document.querySelector('#chat-view').hidden",
            "carol's chat open",
        )
        .await?;

    // A reload keeps carol signed in and in her conversation.
    carol.client.refresh().await?;
    carol.wait_signed_in_as("carol").await?;
    carol
        .wait_for(
            "document.querySelector('#conn').dataset.state === 'open' && document.querySelectorAll('#convs .conv').length === 1",
            "carol's conversation back after the reload",
        )
        .await?;
    alice.say("still there, carol?").await?;
    carol.click("#convs .conv").await?;
    carol
        .wait_for_message("alice", "still there, carol?")
        .await?;

    // Signing out ends the session: a reload shows the form.
    carol.click("#back").await?;
    carol.click("#footer-sign-out").await?;
    carol
        .wait_for(
            "!document.querySelector('#signin').hidden",
            "sign-in form after sign-out",
        )
        .await?;
    alice
        .wait_for(
            r#"!document.querySelector('#people input[value="carol"]')"#,
            "carol gone from alice's list",
        )
        .await?;
    carol.client.refresh().await?;
    carol
        .wait_for(
            "!document.querySelector('#signin').hidden && document.querySelector('#app').hidden && document.querySelector('#conn').dataset.state === 'open'",
            "still signed out after a reload",
        )
        .await?;

    // A wrong password is said in place; the right one signs in again.
    carol.clear("#name").await?;
    carol.type_into("#name", "carol").await?;
    carol.type_into("#password", "wrong horse").await?;
    carol.click("#signin-button").await?;
    carol
        .wait_for(
            "!document.querySelector('#signin-error').hidden",
            "wrong-password error",
        )
        .await?;
    let error = carol.text("#signin-error").await?;
    ensure!(
        error == "wrong username or password",
        "error shown: {error:?}"
    );
    carol
        .screenshot(&target_dir().join("browser-signin-phone.png"))
        .await?;
    carol.clear("#password").await?;
    carol.type_into("#password", PASSWORD).await?;
    carol.click("#signin-button").await?;
    carol.wait_signed_in_as("carol").await?;
    carol
        .wait_for(
            "document.querySelectorAll('#convs .conv').length === 1",
            "carol's conversation after signing in again",
        )
        .await?;

    // Carol changes her password on another device: the page is signed
    // out (its session ended with the others) and says so.
    let (phone, _events) = natter_client::Client::connect(chat_addr).await?;
    let password = natter_client::Credentials::password(PASSWORD);
    phone.login("carol", "online", password).await?;
    phone
        .send(natter_client::Command::Password {
            old: natter_client::Secret::new(PASSWORD),
            new: natter_client::Secret::new("battery staple"),
        })
        .await?;
    carol
        .wait_for(
            "!document.querySelector('#signin').hidden && !document.querySelector('#signin-error').hidden",
            "signed out by the password change",
        )
        .await?;
    let said = carol.text("#signin-error").await?;
    ensure!(said.contains("signed out"), "the page says {said:?}");
    phone.goodbye().await?;
    Ok(())
}

/// `target/`, found from where cargo put the natter binary.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_natter"));
    bin.ancestors()
        .nth(2)
        .expect("target/<profile>/natter")
        .to_path_buf()
}

/// One browser window.
struct Page {
    client: Client,
    name: &'static str,
    profile: PathBuf,
}

impl Page {
    async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        self.wait_for(
            "document.querySelector('#conn').dataset.state === 'open'",
            "connected",
        )
        .await
    }

    async fn sign_in(&self, url: &str, name: &str) -> anyhow::Result<()> {
        if self.eval("return location.href").await? != json!(url) {
            self.open(url).await?;
        }
        self.client
            .find(Locator::Css("#name"))
            .await?
            .clear()
            .await?;
        self.type_into("#name", name).await?;
        self.click("#signin-button").await?;
        self.wait_for("!document.querySelector('#app').hidden", "signed in")
            .await?;
        let shown = self.text("#me-name").await;
        // Hidden on a phone-width window, so only checked where shown.
        if let Ok(shown) = shown.as_deref()
            && !shown.is_empty()
        {
            ensure!(shown == name, "signed in as {shown:?}, not {name:?}");
        }
        Ok(())
    }

    /// Waits for the chat to show, signed in as `name`.
    async fn wait_signed_in_as(&self, name: &str) -> anyhow::Result<()> {
        let check = format!(
            "!document.querySelector('#app').hidden && document.querySelector('#footer-name').textContent === {}",
            json!(name)
        );
        self.wait_for(&check, &format!("signed in as {name}")).await
    }

    async fn clear(&self, css: &str) -> anyhow::Result<()> {
        self.client.find(Locator::Css(css)).await?.clear().await?;
        Ok(())
    }

    async fn say(&self, text: &str) -> anyhow::Result<()> {
        // U+E007 is WebDriver's Enter key: the page sends on Enter.
        self.type_into("#text", &format!("{text}\u{E007}")).await?;
        self.wait_for("document.querySelector('#text').value === ''", "draft sent")
            .await
    }

    async fn wait_for_message(&self, sender: &str, text: &str) -> anyhow::Result<()> {
        let found = format!(
            "[...document.querySelectorAll('#messages .msg')].some(m => m.dataset.sender === {sender} && m.querySelector('.text').textContent === {text})",
            text = json!(text),
            sender = json!(sender),
        );
        self.wait_for(&found, &format!("message {text:?} from {sender}"))
            .await
    }

    /// Clicks the element `css` selects. Lists are redrawn when messages
    /// arrive, so an element found a moment ago may be gone: then it is
    /// found again, as a person would click again.
    async fn click(&self, css: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(error) => Err(error),
            };
            match clicked {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(error).with_context(|| format!("{}: click {css}", self.name));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.client.find(Locator::Css(css)).await?;
        element.send_keys(text).await?;
        Ok(())
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let script = format!("return document.querySelector({}).textContent", json!(css));
        match self.eval(&script).await? {
            Value::String(text) => Ok(text),
            other => bail!("{}: no text at {css}: {other}", self.name),
        }
    }

    async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Polls a JavaScript condition until it holds (or [`PATIENCE`] runs out).
    async fn wait_for(&self, condition: &str, what: &str) -> anyhow::Result<()> {
        let script = format!("return Boolean({condition})");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.eval(&script).await? == json!(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let body = self.eval("return document.body.innerText").await?;
                bail!(
                    "{}: waited {PATIENCE:?} for {what}; page shows:\n{body}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("screenshot: {}", path.display());
        Ok(())
    }
}

/// `natter serve` on ports chosen by the system, stopped when dropped.
struct Natter {
    child: Child,
    web_url: String,
    /// `HOST:PORT` of the chat port.
    chat_addr: String,
    /// The server's admin socket (`natter admin --admin-socket`), in a
    /// directory removed when this is dropped.
    admin_socket: PathBuf,
    _admin_dir: tempfile::TempDir,
}

impl Natter {
    fn start() -> Natter {
        let admin_dir = tempfile::tempdir().expect("a temporary dir");
        let admin_socket = admin_dir.path().join("admin.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .args([
                "serve",
                "--ephemeral",
                "--listen",
                "127.0.0.1:0",
                "--web",
                "127.0.0.1:0",
                "--admin-socket",
            ])
            .arg(&admin_socket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start natter serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut chat_addr = None;
        let web_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("natter serve prints its web address");
            if let Some(addr) = line.strip_prefix("listening on ") {
                chat_addr = Some(addr.trim().to_string());
            }
            if let Some(url) = line.strip_prefix("web on ") {
                break format!("{url}/");
            }
        };
        let chat_addr = chat_addr.expect("natter serve prints its chat address first");
        Natter {
            child,
            web_url,
            chat_addr,
            admin_socket,
            _admin_dir: admin_dir,
        }
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chromedriver on a free loopback port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start(path: &Path) -> ChromeDriver {
        let port = free_port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// A new browser window with a fresh profile.
    async fn session(
        &self,
        name: &'static str,
        (width, height): (u32, u32),
    ) -> anyhow::Result<Page> {
        let profile =
            std::env::temp_dir().join(format!("natter-browser-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .map(String::from)
        .into_iter()
        .chain([
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .with_context(|| format!("chromedriver starts a browser for {name}"))?;
        Ok(Page {
            client,
            name,
            profile,
        })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}
