//! Policy documents from files, directories and stdin, checked offline exactly as the API
//! checks them.
//!
//! - [`read`]: `-f FILE|DIR|-` into checked [`Document`]s. A file ending in `.json` is one JSON
//!   document; `.yaml`/`.yml` is a YAML stream of one or more documents (`---`); anything else,
//!   and stdin, is JSON when it starts with `{`, else YAML. A directory contributes its
//!   `.yaml`, `.yml` and `.json` files, sorted by name, not its subdirectories (nor hidden
//!   files: editors' swap files). Each document goes through [`ValidPolicy::parse`] (JSON) or
//!   [`parse_yaml_stream`] (YAML): the API's own checks and field paths, no check of ours. A
//!   JSON document may also be a list, `{"policies": [...]}` (what `boifi get -o json`
//!   prints), whose entries are checked one by one (`policies[2].spec...`).
//! - [`flag_duplicates`]: a policy name defined by two documents is a problem of the later.
//! - [`valid_or_report`]: all or nothing: every problem of every document is printed as
//!   `<file> document <n>: <field>: <message>` and nothing is returned unless all are valid.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use boifi_policy::yaml::parse_yaml_stream;
use boifi_policy::{FieldError, Format, ValidPolicy};
use serde_json::Value;

use super::client::io_reason;
use super::error::{write_detail, CliError};

/// Largest file (or stdin) read: the YAML stream limit of the policy model.
pub const MAX_FILE_BYTES: u64 = boifi_policy::yaml::MAX_YAML_STREAM_BYTES as u64;
/// Largest total read by one command.
pub const MAX_TOTAL_BYTES: u64 = 4 * MAX_FILE_BYTES;
/// File name endings a directory is searched for.
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
}

/// One document of an input, checked.
#[derive(Debug)]
pub struct Document {
    /// The file as given (`policies/a.yaml`), or `stdin`.
    pub origin: String,
    /// 1-based position among the file's documents (YAML documents without content are not
    /// counted).
    pub index: usize,
    /// 1-based line of the file where the document starts.
    pub line: usize,
    /// Its policies (one, or a list document's), or every problem found.
    pub result: Result<Vec<ValidPolicy>, Vec<FieldError>>,
}

impl Document {
    /// `policies.yaml document 2`, as problems are reported.
    pub fn place(&self) -> String {
        format!("{} document {}", self.origin, self.index)
    }
}

/// Where documents come from: a path (file or directory), or `-` for stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    Path(PathBuf),
}

impl From<&str> for Source {
    fn from(arg: &str) -> Source {
        match arg {
            "-" => Source::Stdin,
            path => Source::Path(PathBuf::from(path)),
        }
    }
}

/// `-f FILE|DIR|-`, repeatable, as `apply` and `validate` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    /// YAML or JSON file, directory of .yaml/.yml/.json files, or - for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<String>,
}

/// Every document of the `-f` arguments `files` (`-` for stdin), in order.
pub fn read_args(files: &[String], stdin: &mut dyn Read) -> Result<Vec<Document>, CliError> {
    let sources: Vec<Source> = files.iter().map(|f| Source::from(f.as_str())).collect();
    read(&sources, stdin)
}

/// Every document of `sources`, in order. A source that cannot be read, or holds no
/// document, is an error naming it.
pub fn read(sources: &[Source], stdin: &mut dyn Read) -> Result<Vec<Document>, CliError> {
    if sources.iter().filter(|s| **s == Source::Stdin).count() > 1 {
        return Err(CliError::Usage("-f - (stdin) may be given once".to_owned()));
    }
    let mut budget = MAX_TOTAL_BYTES;
    let mut documents = Vec::new();
    for source in sources {
        match source {
            Source::Stdin => {
                let text = read_limited(stdin, "stdin", &mut budget)?;
                documents.extend(split("stdin", None, text)?);
            }
            Source::Path(path) if path.is_dir() => {
                let files = directory_files(path)?;
                if files.is_empty() {
                    return Err(CliError::Input(format!(
                        "{}: no .yaml, .yml or .json files in this directory",
                        path.display()
                    )));
                }
                for file in files {
                    documents.extend(read_file(&file, &mut budget)?);
                }
            }
            Source::Path(path) => documents.extend(read_file(path, &mut budget)?),
        }
    }
    flag_duplicates(&mut documents);
    Ok(documents)
}

/// The policy files of `dir`, sorted by name.
fn directory_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let unreadable =
        |e: io::Error| CliError::Input(format!("{}: {}", dir.display(), io_reason(&e)));
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() && extension(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The syntax a file's name says, if it ends in one of [`EXTENSIONS`].
fn extension(path: &Path) -> Option<Syntax> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "json" => Some(Syntax::Json),
        "yaml" | "yml" => Some(Syntax::Yaml),
        _ => None,
    }
}

fn read_file(path: &Path, budget: &mut u64) -> Result<Vec<Document>, CliError> {
    let origin = path.display().to_string();
    let mut file = fs::File::open(path)
        .map_err(|e| CliError::Input(format!("{origin}: {}", io_reason(&e))))?;
    let text = read_limited(&mut file, &origin, budget)?;
    split(&origin, extension(path), text)
}

/// All of `input`, at most [`MAX_FILE_BYTES`] and what is left of `budget`.
fn read_limited(input: &mut dyn Read, origin: &str, budget: &mut u64) -> Result<Vec<u8>, CliError> {
    let limit = MAX_FILE_BYTES.min(*budget);
    let mut bytes = Vec::new();
    input
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Input(format!("{origin}: {}", io_reason(&e))))?;
    if bytes.len() as u64 > limit {
        let what = if limit == MAX_FILE_BYTES {
            format!("larger than {MAX_FILE_BYTES} bytes")
        } else {
            format!("the inputs together are larger than {MAX_TOTAL_BYTES} bytes")
        };
        return Err(CliError::Input(format!("{origin}: {what}")));
    }
    *budget -= bytes.len() as u64;
    Ok(bytes)
}

/// The checked documents of one file; `syntax` from its name, else from its first character.
fn split(origin: &str, syntax: Option<Syntax>, bytes: Vec<u8>) -> Result<Vec<Document>, CliError> {
    if bytes.trim_ascii().is_empty() {
        return Err(CliError::Input(format!("{origin}: no policy in it")));
    }
    let syntax = syntax.unwrap_or(match bytes.trim_ascii_start().first() {
        Some(b'{') => Syntax::Json,
        _ => Syntax::Yaml,
    });
    let documents: Vec<Document> = match syntax {
        Syntax::Json => vec![Document {
            origin: origin.to_owned(),
            index: 1,
            line: 1,
            result: check_json(&bytes),
        }],
        Syntax::Yaml => parse_yaml_stream(&bytes)
            .into_iter()
            .map(|doc| Document {
                origin: origin.to_owned(),
                index: doc.index,
                line: doc.line,
                result: doc.policy.map(|p| vec![p]).map_err(|e| e.errors),
            })
            .collect(),
    };
    if documents.is_empty() {
        return Err(CliError::Input(format!("{origin}: no policy in it")));
    }
    Ok(documents)
}

/// One JSON document through the API's checks: a policy, or a list document.
fn check_json(bytes: &[u8]) -> Result<Vec<ValidPolicy>, Vec<FieldError>> {
    if let Some(entries) = list_entries(bytes) {
        return check_list(&entries);
    }
    ValidPolicy::parse(bytes, Format::Json, None)
        .map(|policy| vec![policy])
        .map_err(|e| e.errors)
}

/// The entries of a list document `{"policies": [...]}` (an object with `policies` and
/// neither `metadata` nor `spec`), each as JSON text; `None` for any other document.
fn list_entries(bytes: &[u8]) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let object = value.as_object()?;
    if object.contains_key("metadata") || object.contains_key("spec") {
        return None;
    }
    let entries = object.get("policies")?.as_array()?;
    Some(entries.iter().map(Value::to_string).collect())
}

/// Each entry of a list document, its problems' fields prefixed with `policies[i]`.
fn check_list(entries: &[String]) -> Result<Vec<ValidPolicy>, Vec<FieldError>> {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match ValidPolicy::parse(entry.as_bytes(), Format::Json, None) {
            Ok(policy) => policies.push(policy),
            Err(errors) => problems.extend(errors.errors.into_iter().map(|e| FieldError {
                field: match e.field.is_empty() {
                    true => format!("policies[{i}]"),
                    false => format!("policies[{i}].{}", e.field),
                },
                message: e.message,
            })),
        }
    }
    if problems.is_empty() {
        Ok(policies)
    } else {
        Err(problems)
    }
}

/// A policy name that an earlier document already defines is a problem of the later one
/// (which of the two should the server hold?).
pub fn flag_duplicates(documents: &mut [Document]) {
    let mut first_place: BTreeMap<String, String> = BTreeMap::new();
    for document in documents {
        let place = document.place();
        let Ok(policies) = &document.result else {
            continue;
        };
        let mut problems = Vec::new();
        for policy in policies {
            match first_place.get(policy.name()) {
                Some(first) => problems.push(FieldError {
                    field: "metadata.name".to_owned(),
                    message: format!("\"{}\" is also defined in {first}", policy.name()),
                }),
                None => {
                    first_place.insert(policy.name().to_owned(), place.clone());
                }
            }
        }
        if !problems.is_empty() {
            document.result = Err(problems);
        }
    }
}

/// The valid policies of `documents`, if every document is valid. Otherwise every problem is
/// printed to `err`, one line each, and the error says how many documents have problems and
/// that nothing was `done` ("applied").
pub fn valid_or_report(
    documents: Vec<Document>,
    err: &mut dyn Write,
    done: &str,
) -> Result<Vec<ValidPolicy>, CliError> {
    let bad = report_problems(&documents, err)?;
    if bad > 0 {
        return Err(CliError::Reported(format!(
            "{bad} of {} documents have problems; nothing was {done}",
            documents.len()
        )));
    }
    Ok(documents
        .into_iter()
        .flat_map(|d| d.result.unwrap_or_default())
        .collect())
}

/// Prints `<place>: <field>: <message>` for every problem; returns how many documents had any.
pub fn report_problems(documents: &[Document], err: &mut dyn Write) -> io::Result<usize> {
    let mut bad = 0;
    for document in documents {
        if let Err(problems) = &document.result {
            bad += 1;
            let place = format!("{}: ", document.place());
            for problem in problems {
                write_detail(err, &place, problem)?;
            }
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests;
