//! Signing in to an account from `natter chat`: the password from a file
//! (`--password-file`) or a prompt without echo (`--password`, or when
//! the server says the name needs one), `--signup` to create the account,
//! and the session token kept in the user's config directory
//! (`$XDG_CONFIG_HOME/natter/sessions/`, else `~/.config/...`, files
//! `0600`) so that the password is needed once. A password never comes
//! from the command line, where other users could see it.

use std::path::Path;

use anyhow::{Context, bail};
use natter_client::{Client, ClientError, Credentials, Secret, TokenStore};
use natter_proto::command::{MAX_PASSWORD, MIN_PASSWORD};

use super::ChatArgs;

/// What `natter chat` knows to sign in with.
pub struct Login {
    password: Option<Secret>,
    signup: bool,
    tokens: Option<TokenStore>,
    /// Whether a prompt for the password may still be shown.
    may_prompt: bool,
}

impl Login {
    /// From the arguments; `--password` and `--signup` ask for the password
    /// now, once `name` is known. `prompt_on_refusal`: whether a refusal
    /// for want of a password may ask for one (not in `--plain` mode,
    /// unless `--password` said so).
    pub fn from_args(
        args: &ChatArgs,
        name: &str,
        prompt_on_refusal: bool,
    ) -> anyhow::Result<Login> {
        let mut login = Login {
            password: None,
            signup: args.signup,
            tokens: TokenStore::user_default(),
            may_prompt: prompt_on_refusal,
        };
        if let Some(file) = &args.password_file {
            login.password = Some(read_password_file(file)?);
        } else if args.password || args.signup {
            login.password = Some(prompt_password(name, args.signup)?);
        }
        Ok(login)
    }

    /// The credentials for `name` on `server`: the password if we have
    /// one, else the kept token if there is one; `None`, a guest.
    pub fn credentials(&self, server: &str, name: &str) -> Option<Credentials> {
        let has_token = self
            .tokens
            .as_ref()
            .is_some_and(|tokens| tokens.load(server, name).is_some());
        (self.password.is_some() || self.signup || has_token).then(|| Credentials {
            password: self.password.clone(),
            tokens: self.tokens.clone(),
            signup: self.signup,
        })
    }

    /// The server refused `name` for want of the right secret: asks for
    /// the password once. False when it cannot (or did already).
    pub fn ask_again(&mut self, name: &str) -> anyhow::Result<bool> {
        if !self.may_prompt || self.signup {
            return Ok(false);
        }
        self.may_prompt = false;
        self.password = Some(prompt_password(name, false)?);
        Ok(true)
    }
}

/// Registers `name` as these credentials say (a guest without any).
pub async fn register(
    client: &Client,
    login: &Login,
    name: &str,
    status: &str,
) -> Result<(), ClientError> {
    match login.credentials(client.server_addr(), name) {
        Some(credentials) => client.login(name, status, credentials).await,
        None => client.register(name, status).await,
    }
}

/// The first line of `file`, without its line ending.
fn read_password_file(file: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        bail!("the password file {} is empty", file.display());
    }
    Ok(Secret::new(password))
}

/// Asks on the terminal without echo (twice for a new account).
fn prompt_password(name: &str, new: bool) -> anyhow::Result<Secret> {
    let password = rpassword::prompt_password(format!("password for {name}: "))
        .context("cannot ask for the password (no terminal? use --password-file FILE)")?;
    if new {
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
            bail!("a password is {MIN_PASSWORD} to {MAX_PASSWORD} bytes");
        }
        if rpassword::prompt_password("again: ")? != password {
            bail!("the passwords differ");
        }
    }
    Ok(Secret::new(password))
}
