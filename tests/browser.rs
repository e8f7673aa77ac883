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
mod ports;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
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
    for (name, size) in [("alice", (1280, 800)), ("bob", (390, 820))] {
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
        if outcome.is_ok() {
            outcome = restart_scenario(alice, bob).await;
        }
        if outcome.is_ok() {
            outcome = restart_without_store(alice).await;
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
                "[...document.querySelectorAll('#toasts .toast')].some(t => \
                 t.textContent === 'Notice from the server: {notice}')"
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
            "document.body.dataset.online === 'true'",
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
    // One toast per conversation: both are said, neither overwritten.
    let toasts = alice
        .eval("return [...document.querySelectorAll('#toasts .toast')].map(t => t.textContent)")
        .await?;
    let toasts: Vec<String> = serde_json::from_value(toasts)?;
    ensure!(
        toasts.iter().filter(|t| t.contains("ended")).count() == 2
            && toasts.iter().any(|t| t.contains("#1"))
            && toasts.iter().any(|t| t.contains("#2")),
        "toasts {toasts:?}"
    );
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

/// A server with a store, restarted under the page's feet: the desktop
/// window is dan (a guest), the phone-width one eve (an account). What a
/// person would check: drafts kept per conversation, text typed offline
/// shown as pending and delivered once, nobody shown online while the
/// server is down, a restart not called an end, conversations named with
/// a topic, links, mentions, an unread line, older messages loaded by
/// scrolling up, toasts clear of the text box, the phone's top bar.
async fn restart_scenario(dan: &Page, eve: &Page) -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("natter-browser-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut server = Natter::durable(&data, None);
    let outcome = restart_steps(&mut server, &data, dan, eve).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    outcome
}

async fn restart_steps(
    server: &mut Natter,
    data: &Path,
    dan: &Page,
    eve: &Page,
) -> anyhow::Result<()> {
    const PASSWORD: &str = "eve's password";
    let url = server.web_url.clone();
    let target = target_dir();
    dan.open(&url).await?;
    dan.screenshot(&target.join("browser-form.png")).await?;
    dan.sign_in(&url, "dan").await?;
    eve.open(&url).await?;
    eve.screenshot(&target.join("browser-form-phone.png"))
        .await?;
    eve.click("#signup-toggle").await?;
    eve.clear("#name").await?;
    eve.type_into("#name", "eve").await?;
    eve.type_into("#password", PASSWORD).await?;
    eve.click("#signin-button").await?;
    eve.wait_signed_in_as("eve").await?;

    // At 390 px the top bar still shows eve's own name, whole.
    let fits = eve
        .eval(
            "const n = document.querySelector('#me-name'); const r = n.getBoundingClientRect(); \
             return r.width > 0 && r.right <= innerWidth && n.scrollWidth <= n.clientWidth \
             && document.querySelector('.topbar').scrollWidth <= innerWidth",
        )
        .await?;
    ensure!(
        fits == json!(true),
        "eve's name clipped in the phone's top bar"
    );
    let width = eve.eval("return innerWidth").await?;
    ensure!(width == json!(390), "the phone window is {width} px wide");

    // Eve's long status is cut in dan's list, but readable whole.
    let status = "writing the quarterly report, back after lunch, call me if the build breaks";
    eve.click("#status-select option[value=custom]").await?;
    eve.type_into("#status-custom", &format!("{status}\u{E007}"))
        .await?;
    dan.type_into("#people-search", "ev").await?;
    dan.wait_for(
        r#"document.querySelector('#people input[value="eve"]')"#,
        "eve found",
    )
    .await?;
    dan.wait_for(
        &format!(
            "[...document.querySelectorAll('#people .person-status')].some(s => s.title === {})",
            json!(status)
        ),
        "eve's whole status in a tooltip",
    )
    .await?;

    // Two conversations; the invitation says which and who is in it.
    for n in 1..=2 {
        dan.click(r#"#people input[value="eve"]"#).await?;
        dan.click("#start").await?;
        eve.wait_for(
            "document.querySelector('#invites .invite-members')?.textContent.includes('dan')",
            "an invitation that says who is in",
        )
        .await?;
        let invite = eve.text("#invites .invite-text").await?;
        ensure!(
            invite.contains("dan invited you to #") && invite.contains("with dan"),
            "invitation {n} says {invite:?}"
        );
        eve.click("#invites .accept").await?;
        eve.wait_for(
            &format!("document.querySelectorAll('#convs .conv').length === {n}"),
            "eve in the conversation",
        )
        .await?;
        eve.click("#back").await?;
    }
    // "ONLINE N" counts the people listed.
    dan.eval(
        "const s = document.querySelector('#people-search'); s.value = ''; \
         s.dispatchEvent(new Event('input')); return true",
    )
    .await?;
    dan.wait_for(
        "document.querySelectorAll('#people .person').length === 1 && document.querySelector('#online-count').textContent === '1'",
        "one person listed, counted 1",
    )
    .await?;

    let ids = dan
        .eval("return [...document.querySelectorAll('#convs .conv')].map(c => Number(c.dataset.conv))")
        .await?;
    let ids: Vec<u64> = serde_json::from_value(ids)?;
    ensure!(ids.len() == 2, "dan's conversations {ids:?}");
    let (first, second) = (ids[0], ids[1]);
    let conv = |id: u64| format!(r#"#convs .conv[data-conv="{id}"]"#);

    // A name for the second conversation, shown to both.
    dan.click(&conv(second)).await?;
    dan.say("/topic friday lunch").await?;
    eve.wait_for(
        &format!(
            "document.querySelector('{} .conv-title').textContent === 'friday lunch #{second}'",
            conv(second)
        ),
        "the topic in eve's list",
    )
    .await?;

    // A link, a mention and right-to-left text, as eve writes them.
    eve.click(&conv(first)).await?;
    eve.say("dan, the menu: https://example.com/menu?day=fri.")
        .await?;
    eve.say("שלום dan!").await?;
    dan.click(&conv(first)).await?;
    dan.wait_for_message("eve", "שלום dan!").await?;
    let link = dan
        .eval(
            "const a = document.querySelector('#messages .text a'); \
             return a && [a.getAttribute('href'), a.rel, a.textContent, a.parentElement.dir, \
             a.closest('.msg').classList.contains('mention'), \
             document.querySelectorAll('#messages .text > :not(a)').length]",
        )
        .await?;
    ensure!(
        link == json!([
            "https://example.com/menu?day=fri",
            "noopener noreferrer",
            "https://example.com/menu?day=fri",
            "auto",
            true,
            0
        ]),
        "the link as dan sees it: {link}"
    );
    let grouped = dan
        .eval("return [...document.querySelectorAll('#messages .msg')].slice(-2).map(m => m.classList.contains('cont'))")
        .await?;
    ensure!(
        grouped == json!([false, true]),
        "eve's two lines grouped: {grouped}"
    );

    // A draft per conversation.
    dan.type_into("#text", "draft for the first").await?;
    dan.click(&conv(second)).await?;
    dan.wait_for(
        "document.querySelector('#text').value === ''",
        "an empty box in the second",
    )
    .await?;
    dan.type_into("#text", "draft for lunch").await?;
    dan.click(&conv(first)).await?;
    dan.wait_for(
        "document.querySelector('#text').value === 'draft for the first'",
        "the first conversation's draft back",
    )
    .await?;

    // The server goes down: nobody is shown online, and what dan sends
    // waits, shown as pending.
    server.stop();
    dan.wait_for(
        "document.querySelector('#conn').dataset.state === 'waiting'",
        "dan offline",
    )
    .await?;
    dan.wait_for(
        "document.querySelectorAll('#people .person').length === 0 && document.querySelector('#online-count').textContent === ''",
        "nobody shown online while offline",
    )
    .await?;
    dan.clear("#text").await?;
    dan.say("typed while offline").await?;
    dan.wait_for(
        "[...document.querySelectorAll('#messages .msg.pending')].some(m => m.textContent.includes('typed while offline'))",
        "the offline message shown as pending",
    )
    .await?;
    dan.screenshot(&target_dir().join("browser-offline.png"))
        .await?;

    // Back, with its store: the conversations were not ended, the pending
    // message goes once, and each draft is where it was typed.
    *server = Natter::durable(data, Some(server.ports));
    dan.wait_for(
        "document.body.dataset.online === 'true' && !document.querySelector('#messages .msg.pending')",
        "the pending message sent after the restart",
    )
    .await?;
    eve.wait_for(
        "document.body.dataset.online === 'true'",
        "eve back after the restart",
    )
    .await?;
    eve.wait_for_message("dan", "typed while offline").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = "return [...document.querySelectorAll('#messages .msg .text')].filter(t => t.textContent === 'typed while offline').length";
    ensure!(eve.eval(count).await? == json!(1), "eve sees it once");
    ensure!(dan.eval(count).await? == json!(1), "dan sees it once");
    let toasts = dan
        .eval("return [...document.querySelectorAll('#toasts .toast')].map(t => t.textContent).join(' | ')")
        .await?;
    ensure!(
        !toasts.as_str().unwrap_or_default().contains("ended"),
        "a restart called an end: {toasts}"
    );
    ensure!(
        dan.eval("return document.querySelectorAll('#convs .conv').length")
            .await?
            == json!(2),
        "dan's conversations after the restart"
    );
    dan.click(&conv(second)).await?;
    dan.wait_for(
        "document.querySelector('#text').value === 'draft for lunch'",
        "the lunch draft still in its conversation",
    )
    .await?;

    // While dan looks at lunch, eve writes in the first: an unread line.
    eve.say("are you there?").await?;
    eve.say("the table is booked for 12:30").await?;
    dan.wait_for(
        &format!(
            "document.querySelector('{} .badge')?.textContent === '2'",
            conv(first)
        ),
        "two unread",
    )
    .await?;
    ensure!(
        dan.eval("return document.title").await? == json!("(2) natter"),
        "the title badge"
    );
    dan.click(&conv(first)).await?;
    dan.wait_for(
        "document.querySelector('#unread-line')?.nextElementSibling?.textContent.includes('are you there?')",
        "the unread line above eve's first new message",
    )
    .await?;
    dan.screenshot(&target_dir().join("browser-unread.png"))
        .await?;

    // Scrollback: eve signs out, a bot fills the conversation, eve signs
    // in again and scrolls up to the oldest message.
    eve.click("#back").await?;
    eve.click("#footer-sign-out").await?;
    eve.wait_for(
        "!document.querySelector('#signin').hidden",
        "eve signed out",
    )
    .await?;
    let (bot, mut events) = natter_client::Client::connect(server.chat_addr.clone()).await?;
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    bot.register("bot", "online").await?;
    bot.join(first).await?;
    for n in 1..=60 {
        bot.send_message(first, format!("bot line {n}")).await?;
    }
    dan.wait_for_message("bot", "bot line 60").await?;
    // A resize keeps the newest message in view.
    let at_bottom = "(() => { const m = document.querySelector('#messages'); \
                     return m.scrollHeight - m.scrollTop - m.clientHeight < 4; })()";
    dan.wait_for(at_bottom, "the list at the bottom").await?;
    dan.client.set_window_size(1280, 520).await?;
    dan.wait_for(at_bottom, "the list at the bottom after a resize")
        .await?;
    dan.client.set_window_size(1280, 800).await?;
    // The form still offers sign-up, as she last used it: back to sign-in.
    eve.click("#signup-toggle").await?;
    eve.wait_for(
        "document.querySelector('#signin-button').textContent === 'Sign in'",
        "the sign-in form",
    )
    .await?;
    eve.clear("#name").await?;
    eve.type_into("#name", "eve").await?;
    eve.type_into("#password", PASSWORD).await?;
    eve.click("#signin-button").await?;
    eve.wait_signed_in_as("eve").await?;
    eve.wait_for(
        &format!("document.querySelector('{} .badge')", conv(first)),
        "eve's unread count from UNREAD",
    )
    .await?;
    let unread = eve.text(&format!("{} .badge", conv(first))).await?;
    ensure!(unread == "60", "eve's unread count {unread:?}");
    eve.click(&conv(first)).await?;
    eve.wait_for_message("bot", "bot line 60").await?;
    let top = "const m = document.querySelector('#messages'); m.scrollTop = 0; \
               m.dispatchEvent(new Event('scroll')); return true";
    let deadline = Instant::now() + PATIENCE;
    while eve
        .eval("return Boolean(document.querySelector('#messages .history-start'))")
        .await?
        != json!(true)
    {
        ensure!(
            Instant::now() < deadline,
            "eve never reached the first message"
        );
        eve.eval(top).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eve.wait_for_message("eve", "dan, the menu: https://example.com/menu?day=fri.")
        .await?;
    // What she missed starts under the unread line (UNREAD's read marker).
    eve.wait_for(
        "document.querySelector('#unread-line')?.nextElementSibling?.textContent.includes('bot line 1')",
        "eve's unread line above the bot's first line",
    )
    .await?;
    eve.eval(
        "document.querySelector('#unread-line').scrollIntoView({ block: 'center' }); return true",
    )
    .await?;
    eve.screenshot(&target.join("browser-unread-phone.png"))
        .await?;

    // The compact layout: no bubbles, one line per message; and back.
    dan.click("#layout").await?;
    let compact = "document.body.dataset.layout === 'compact' && \
                   getComputedStyle(document.querySelector('#messages .msg .text')).borderTopStyle === 'none'";
    dan.wait_for(compact, "the compact layout").await?;
    dan.click("#layout").await?;
    dan.wait_for(
        "document.body.dataset.layout === 'bubbles'",
        "the bubbles again",
    )
    .await?;

    // Toasts never cover the text box, on either window.
    for page in [dan, eve] {
        page.eval(
            "document.querySelector('#text').value = 'x'.repeat(9000); \
             document.querySelector('#composer').requestSubmit(); return true",
        )
        .await?;
        page.wait_for(
            "document.querySelector('#toasts .toast')?.textContent.includes('too long')",
            "the too-long toast",
        )
        .await?;
        let covered = page
            .eval(
                "const t = document.querySelector('#composer').getBoundingClientRect(); \
                 return [...document.querySelectorAll('#toasts .toast')].some(n => { \
                 const r = n.getBoundingClientRect(); \
                 return r.left < t.right && t.left < r.right && r.top < t.bottom && t.top < r.bottom; })",
            )
            .await?;
        ensure!(
            covered == json!(false),
            "{}: a toast covers the text box",
            page.name
        );
        page.eval(
            "const t = document.querySelector('#text'); t.value = ''; \
             t.dispatchEvent(new Event('input')); return true",
        )
        .await?;
    }

    bot.goodbye().await?;
    drain.abort();
    Ok(())
}

/// A server without a store forgets its conversations when it restarts:
/// the page, told "server shutting down" before it went, says the server
/// restarted, rather than that the conversation ended.
async fn restart_without_store(fay: &Page) -> anyhow::Result<()> {
    let ephemeral = |ports: (u16, u16)| {
        let listen = format!("127.0.0.1:{}", ports.0);
        let web = format!("127.0.0.1:{}", ports.1);
        Natter::spawn(&["--ephemeral", "--listen", &listen, "--web", &web])
    };
    let mut server = ephemeral((free_port(), free_port()));
    fay.sign_in(&server.web_url, "fay").await?;
    let (gus, mut events) = natter_client::Client::connect(server.chat_addr.clone()).await?;
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    gus.register("gus", "online").await?;
    fay.type_into("#people-search", "gu").await?;
    fay.click(r#"#people input[value="gus"]"#).await?;
    fay.click("#start").await?;
    fay.wait_for(
        "document.querySelectorAll('#convs .conv').length === 1",
        "fay's conversation",
    )
    .await?;
    drain.abort();
    server.terminate();
    fay.wait_for(
        "document.querySelector('#conn').dataset.state === 'waiting'",
        "fay offline",
    )
    .await?;
    let ports = server.ports;
    drop(server);
    let _server = ephemeral(ports);
    fay.wait_for(
        "document.querySelector('#conn').dataset.state === 'open' && document.querySelectorAll('#convs .conv').length === 0",
        "the forgotten conversation removed",
    )
    .await?;
    let toasts = fay
        .eval("return [...document.querySelectorAll('#toasts .toast')].map(t => t.textContent).join(' | ')")
        .await?;
    let toasts = toasts.as_str().unwrap_or_default();
    ensure!(
        toasts.contains("The server restarted and no longer has conversation #1")
            && !toasts.contains("ended"),
        "the restart said as {toasts:?}"
    );
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
    /// The chat and web ports, to start again on the same ones.
    ports: (u16, u16),
    /// The server's admin socket (`natter admin --admin-socket`), in a
    /// directory removed when this is dropped.
    admin_socket: PathBuf,
    _admin_dir: tempfile::TempDir,
}

impl Natter {
    fn start() -> Natter {
        Natter::spawn(&[
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--web",
            "127.0.0.1:0",
        ])
    }

    /// A server with a store in `data`, on `ports` (or free ones): the
    /// same ports again make a restart the page can reconnect to.
    fn durable(data: &Path, ports: Option<(u16, u16)>) -> Natter {
        let (chat, web) = ports.unwrap_or_else(|| (free_port(), free_port()));
        let data = data.display().to_string();
        let listen = format!("127.0.0.1:{chat}");
        let web = format!("127.0.0.1:{web}");
        Natter::spawn(&[
            "--data-dir",
            &data,
            "--listen",
            &listen,
            "--web",
            &web,
            "--rate-limit",
            "1000",
        ])
    }

    /// Stops the server as an operator would (SIGTERM): it tells its
    /// clients it is shutting down.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Stops the server as a crash would (the store keeps everything).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(args: &[&str]) -> Natter {
        let admin_dir = tempfile::tempdir().expect("a temporary dir");
        let admin_socket = admin_dir.path().join("admin.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("serve")
            .args(args)
            .arg("--admin-socket")
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
        let port = |addr: &str| addr.trim_end_matches('/').rsplit(':').next()?.parse().ok();
        let ports = (
            port(&chat_addr).expect("a chat port"),
            port(&web_url).expect("a web port"),
        );
        Natter {
            child,
            web_url,
            chat_addr,
            ports,
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
        let mut options = json!({ "binary": CHROMIUM, "args": args });
        if width < 500 {
            // Chromium's windows are at least 500 px wide: a phone's width
            // needs its device emulation.
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 } });
        }
        capabilities.insert("goog:chromeOptions".into(), options);
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

/// A loopback port nobody listens on right now (see `tests/ports`).
fn free_port() -> u16 {
    ports::free_port(ports::Slice::Browser)
}
