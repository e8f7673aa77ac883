//! Where `natter serve`'s settings come from: its flags, then `NATTER_*`
//! environment variables, then a TOML file (`--config`), then the
//! defaults, in that order of precedence.
//!
//! Nothing here knows the settings themselves: every long flag of the
//! command is a key of the file with the same name (`max-connections =
//! 5000`) and an environment variable (`NATTER_MAX_CONNECTIONS`), found in
//! clap's own list of arguments, so a flag added tomorrow has both at once.
//! A value from the environment or the file is checked by the flag's own
//! parser before anything else happens, and an error names where it came
//! from (the variable, or the file and line). The values that pass become
//! the flags' defaults, and clap parses the command line over them as
//! usual: flags win, and `--help` still works.

use std::ffi::OsString;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// The prefix of the environment variables.
pub const ENV_PREFIX: &str = "NATTER_";

/// The flag that names the file; it is no key of the file itself.
pub const CONFIG_FLAG: &str = "config";

/// Why the settings could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a valid TOML file: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error(
        "{path}:{line}: unknown key `{key}` (`natter config --print-defaults` lists every key)"
    )]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{origin}: bad value for `{key}`: {reason}")]
    BadValue {
        origin: Origin,
        key: String,
        reason: String,
    },
    /// The command line itself (or a combination clap refuses); also
    /// `--help` and `--version`, which clap prints on exit.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
pub enum Origin {
    Env(String),
    File { path: PathBuf, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// A setting's value from the environment or the file, already checked.
struct Layered {
    id: String,
    values: Vec<String>,
}

/// `NATTER_MAX_CONNECTIONS` for `max-connections`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

/// The flags that are settings: every long flag but help and version.
fn settings(command: &Command) -> impl Iterator<Item = (&Arg, &str)> {
    command.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        let builtin = matches!(arg.get_action(), ArgAction::Help | ArgAction::Version);
        (!builtin).then_some((arg, long))
    })
}

/// `command` with each setting's environment variable attached, so that
/// `--help` shows it.
pub fn with_env(command: Command) -> Command {
    let names: Vec<(String, String)> = settings(&command)
        .map(|(arg, long)| (arg.get_id().to_string(), env_name(long)))
        .collect();
    names.into_iter().fold(command, |command, (id, name)| {
        command.mut_arg(id, |arg| arg.env(name))
    })
}

/// Parses `argv` (the command's name first) with the environment (read
/// through `env`) and the config file under it.
///
/// What the environment and the file give goes in front of the command
/// line's own flags, as flags, unless the command line gives that setting
/// (or one it conflicts with) itself, or it is the default anyway; so clap
/// checks every rule between flags (`--tls-cert` needs `--tls-key`) on
/// the settings as a whole, wherever each came from.
pub fn resolve(
    command: Command,
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<ArgMatches, SettingsError> {
    let mut command = with_env(command);
    // Built, so that every flag shows its default (switches: false).
    command.build();
    // A first, lenient look: which flags the command line gives (they win
    // over everything) and which file to read.
    let given = match command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
    {
        Ok(matches) => matches,
        // --help, --version and the like: clap says it.
        Err(_) => return Ok(command.try_get_matches_from(argv)?),
    };
    let from_flags = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    let mut layers = from_env(&command, env)?;
    let file = match from_flags(CONFIG_FLAG) {
        true => given.get_one::<PathBuf>(CONFIG_FLAG).cloned(),
        false => env(&env_name(CONFIG_FLAG)).map(PathBuf::from),
    };
    if let Some(path) = file {
        for value in from_file(&command, &path)? {
            // The environment wins over the file.
            if !layers.iter().any(|l| l.id == value.id) {
                layers.push(value);
            }
        }
    }
    let mut full: Vec<OsString> = argv.iter().take(1).cloned().collect();
    for layer in layers {
        if from_flags(&layer.id) || conflicts_with_flags(&command, &layer.id, &from_flags) {
            continue;
        }
        full.extend(as_flags(&command, &layer));
    }
    full.extend(argv.iter().skip(1).cloned());
    Ok(command.try_get_matches_from(full)?)
}

/// A setting as the flags that would give it (none when it is the
/// default).
fn as_flags(command: &Command, layer: &Layered) -> Vec<OsString> {
    let Some(arg) = command
        .get_arguments()
        .find(|a| a.get_id() == layer.id.as_str())
    else {
        return Vec::new();
    };
    let long = arg.get_long().unwrap_or_default();
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if default == layer.values {
        return Vec::new();
    }
    match arg.get_action() {
        ArgAction::SetTrue if layer.values == ["true"] => vec![format!("--{long}").into()],
        ArgAction::SetFalse if layer.values == ["false"] => vec![format!("--{long}").into()],
        action if action.takes_values() => layer
            .values
            .iter()
            .map(|value| format!("--{long}={value}").into())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a flag given on the command line conflicts with `id` (a file's
/// `no-web = true` gives way to `--web ADDR`).
fn conflicts_with_flags(command: &Command, id: &str, from_flags: &dyn Fn(&str) -> bool) -> bool {
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == id) else {
        return false;
    };
    command
        .get_arg_conflicts_with(arg)
        .iter()
        .any(|other| from_flags(other.get_id().as_str()))
}

/// The settings the environment gives, checked.
fn from_env(
    command: &Command,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Vec<Layered>, SettingsError> {
    let mut layers = Vec::new();
    for (arg, long) in settings(command) {
        if long == CONFIG_FLAG {
            continue;
        }
        let name = env_name(long);
        let Some(value) = env(&name) else { continue };
        let value = value.to_string_lossy().into_owned();
        let origin = Origin::Env(format!("{name}={value}"));
        layers.push(check(command, arg, long, vec![value], origin)?);
    }
    Ok(layers)
}

/// The settings a TOML file gives, checked.
fn from_file(command: &Command, path: &Path) -> Result<Vec<Layered>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
        path: path.to_owned(),
        error,
    })?;
    type Spanned<T> = toml::Spanned<T>;
    let table: std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|error| SettingsError::Syntax {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_string(),
        })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut layers = Vec::new();
    for (key, value) in table {
        let line = line_of(key.span().start);
        let found = settings(command).find(|(_, long)| *long == key.get_ref());
        let (arg, long) = match found {
            Some((_, CONFIG_FLAG)) | None => {
                return Err(SettingsError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    key: key.into_inner(),
                });
            }
            Some(found) => found,
        };
        let origin = Origin::File {
            path: path.to_owned(),
            line,
        };
        let values =
            toml_values(value.get_ref(), arg).map_err(|reason| SettingsError::BadValue {
                origin: origin.clone(),
                key: long.to_string(),
                reason,
            })?;
        layers.push(check(command, arg, long, values, origin)?);
    }
    Ok(layers)
}

/// A TOML value as the text a flag would be given.
fn toml_values(value: &toml::Value, arg: &Arg) -> Result<Vec<String>, String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        other => Err(format!("a {} is not a value here", other.type_str())),
    };
    match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(scalar).collect()
        }
        toml::Value::Array(_) => Err("one value expected, not an array".into()),
        value => Ok(vec![scalar(value)?]),
    }
}

/// Checks values with the flag's own parser, as if they were given on the
/// command line.
fn check(
    command: &Command,
    arg: &Arg,
    long: &str,
    values: Vec<String>,
    origin: Origin,
) -> Result<Layered, SettingsError> {
    let bad = |reason: String| SettingsError::BadValue {
        origin: origin.clone(),
        key: long.to_string(),
        reason,
    };
    if !arg.get_action().takes_values() {
        // A switch (`--no-web`): true or false.
        for value in &values {
            if value != "true" && value != "false" {
                return Err(bad(format!("`{value}` is not true or false")));
            }
        }
    } else {
        let checker = checker(command);
        let mut argv = vec![OsString::from(command.get_name())];
        for value in &values {
            argv.push(format!("--{long}={value}").into());
        }
        if let Err(error) = checker.try_get_matches_from(argv) {
            return Err(bad(clap_reason(&error)));
        }
    }
    Ok(Layered {
        id: arg.get_id().to_string(),
        values,
    })
}

/// The command with its flags free of the rules that tie them together
/// (checked once everything is put together) and of the environment, to
/// check one flag's values alone.
fn checker(command: &Command) -> Command {
    command.clone().mut_args(|arg| {
        arg.requires(Resettable::Reset)
            .conflicts_with(Resettable::Reset)
            .env(Resettable::Reset)
            .required(false)
    })
}

/// A clap error in one line, without its "error: " and its advice to
/// try --help.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    let text = lines.join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_string()
}

/// A config file that sets every key to its default, each with its help
/// text and environment variable: `natter config --print-defaults`.
/// Settings without a default are there, commented out.
pub fn defaults_file(command: &Command) -> String {
    let mut command = with_env(command.clone());
    // Built, so that switches show their implicit default (false).
    command.build();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# natter {} settings, with their defaults.\n\
         #\n\
         # Each key is a flag of `natter {}` (same name) and an environment\n\
         # variable ({ENV_PREFIX}KEY, upper case, `-` as `_`). A flag wins over\n\
         # the environment, which wins over this file, which wins over the\n\
         # defaults. Use it with `natter {} --config FILE`; a reload (SIGHUP)\n\
         # reads it again.",
        command.get_name(),
        command.get_name(),
        command.get_name(),
    );
    for (arg, long) in settings(&command) {
        if long == CONFIG_FLAG {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // clap drops the full stop of a one-sentence help.
        let help = match help.trim_end() {
            "" => String::new(),
            text if text.ends_with('.') => text.to_string(),
            text => format!("{text}."),
        };
        for line in wrap(&help, 74) {
            let _ = writeln!(out, "# {line}");
        }
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !choices.is_empty() && arg.get_action().takes_values() {
            let _ = writeln!(out, "# One of: {}.", choices.join(", "));
        }
        let _ = writeln!(out, "# Flag --{long}, environment {}.", env_name(long));
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let append = matches!(arg.get_action(), ArgAction::Append);
        match (defaults.as_slice(), append) {
            ([], _) => {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map_or("VALUE".to_string(), |n| n.to_string());
                let _ = writeln!(out, "# {long} = {}", toml_text(&name));
            }
            ([one], false) => {
                let _ = writeln!(out, "{long} = {}", toml_text(one));
            }
            (many, _) => {
                let items: Vec<String> = many.iter().map(|v| toml_text(v)).collect();
                let _ = writeln!(out, "{long} = [{}]", items.join(", "));
            }
        }
    }
    out
}

/// A default as TOML: numbers and booleans bare, everything else quoted.
fn toml_text(value: &str) -> String {
    if value == "true" || value == "false" || value.parse::<i64>().is_ok() {
        value.to_string()
    } else {
        toml::Value::String(value.to_string()).to_string()
    }
}

/// Help text in comment lines of at most `width` characters (paragraphs
/// kept).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}
