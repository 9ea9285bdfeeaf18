use super::*;

fn read_str(sources: &[Source], stdin: &str) -> Result<Vec<Document>, CliError> {
    read(sources, &mut stdin.as_bytes())
}

fn names(documents: &[Document]) -> Vec<String> {
    documents
        .iter()
        .flat_map(|d| d.result.as_ref().expect("valid").iter())
        .map(|p| p.name().to_owned())
        .collect()
}

fn problems(document: &Document) -> Vec<String> {
    document
        .result
        .as_ref()
        .expect_err("problems")
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect()
}

const GOOD: &str =
    r#"{"metadata":{"name":"a"},"spec":{"rules":[{"fault":{"abort":{"httpStatus":503}}}]}}"#;

const STREAM: &str = "\
# two policies
metadata: {name: a}
spec:
  rules:
  - fault: {abort: {httpStatus: 503}}
---
metadata: {name: b}
spec:
  rules:
  - fault:
      percentage: 150
      abort: {httpStatus: 503}
---
# nothing but a comment: not a document
";

#[test]
fn stdin_json_is_one_document() {
    let docs = read_str(&[Source::Stdin], GOOD).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].origin, "stdin");
    assert_eq!(docs[0].place(), "stdin document 1");
    assert_eq!(names(&docs), ["a"]);
}

#[test]
fn a_yaml_stream_is_checked_document_by_document() {
    let docs = read_str(&[Source::Stdin], STREAM).unwrap();
    assert_eq!(docs.len(), 2, "the comment-only document is not counted");
    assert_eq!(names(&docs[..1]), ["a"]);
    assert_eq!((docs[1].index, docs[1].line), (2, 7));
    let found = problems(&docs[1]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("spec.rules[0].fault.percentage: "),
        "{found:?}"
    );

    let mut err = Vec::new();
    let e = valid_or_report(docs, &mut err, "applied").unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 of 2 documents have problems; nothing was applied"
    );
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.starts_with("stdin document 2: spec.rules[0].fault.percentage: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn yaml_problems_have_the_api_field_paths() {
    let yaml = "metadata: {name: a}\nspec:\n  rules:\n  - fault: {abort: {httpStatus: 503}, percentge: 5}\n";
    let docs = read_str(&[Source::Stdin], yaml).unwrap();
    assert_eq!(
        problems(&docs[0]),
        ["spec.rules[0].fault.percentge: unknown field"]
    );
    let not_yaml = "metadata: {name: a\n";
    let docs = read_str(&[Source::Stdin], not_yaml).unwrap();
    let found = problems(&docs[0]);
    assert!(found[0].starts_with(": line "), "{found:?}");
}

#[test]
fn the_file_name_decides_the_syntax() {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML too, but a .json file gets the JSON parser's own messages.
    let path = dir.path().join("p.json");
    fs::write(&path, "metadata: {name: a}").unwrap();
    let docs = read_str(&[Source::Path(path)], "").unwrap();
    assert!(
        problems(&docs[0])[0].contains("JSON object"),
        "{:?}",
        docs[0]
    );
    let path = dir.path().join("p.yml");
    fs::write(&path, GOOD).unwrap();
    assert_eq!(names(&read_str(&[Source::Path(path)], "").unwrap()), ["a"]);
}

#[test]
fn a_directory_gives_its_policy_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
    write("c.json", &GOOD.replace("\"a\"", "\"c\""));
    write("a.yaml", STREAM.split("---").next().unwrap());
    write(
        "b.YML",
        "metadata: {name: b}\nspec: {rules: [{fault: {delay: {fixed_delay_ms: 1}}}]}\n",
    );
    write("notes.txt", "not a policy");
    write(".a.json.swp", "editor junk");
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/d.json"), GOOD).unwrap();
    let docs = read_str(&[Source::Path(dir.path().to_path_buf())], "").unwrap();
    assert_eq!(names(&docs), ["a", "b", "c"]);
    assert!(docs[0].origin.ends_with("a.yaml"), "{}", docs[0].origin);

    let empty = tempfile::tempdir().unwrap();
    let err = read_str(&[Source::Path(empty.path().to_path_buf())], "").unwrap_err();
    assert!(
        err.to_string().contains("no .yaml, .yml or .json files"),
        "{err}"
    );
}

#[test]
fn unreadable_inputs_are_errors_naming_them() {
    let err = read_str(&[Source::from("/nonexistent/policies.yaml")], "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/policies.yaml: No such file or directory"
    );
    assert_eq!(err.exit_code(), 1);
    let err = read_str(&[Source::Stdin, Source::from("-")], "").unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let err = read_str(&[Source::Stdin], "   \n").unwrap_err();
    assert_eq!(err.to_string(), "stdin: no policy in it");
    let err = read_str(&[Source::Stdin], "# only a comment\n---\n").unwrap_err();
    assert_eq!(err.to_string(), "stdin: no policy in it");
    let mut bytes: &[u8] = &[b'm', b':', b' ', 0xff, 0xfe];
    let docs = read(&[Source::Stdin], &mut bytes).unwrap();
    assert!(problems(&docs[0])[0].contains("not UTF-8"), "{docs:?}");
}

#[test]
fn a_file_over_the_limit_is_refused_without_reading_it_all() {
    let mut endless = std::io::repeat(b' ');
    let err = read(&[Source::Stdin], &mut endless).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[test]
fn a_name_given_twice_is_a_problem_of_the_later_document() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.json"), dir.path().join("y.json"));
    fs::write(&x, GOOD).unwrap();
    fs::write(&y, GOOD).unwrap();
    let docs = read_str(&[Source::Path(x.clone()), Source::Path(y)], "").unwrap();
    assert!(docs[0].result.is_ok());
    assert_eq!(
        problems(&docs[1]),
        [format!(
            "metadata.name: \"a\" is also defined in {} document 1",
            x.display()
        )]
    );
}

#[test]
fn a_list_document_is_checked_entry_by_entry() {
    let second = GOOD
        .replace("\"a\"", "\"Bad!\"")
        .replace("}]}}", "}]},\"status\":{\"revision\":3}}");
    let list = format!(r#"{{"policies":[{GOOD},{second}]}}"#);
    let docs = read_str(&[Source::Stdin], &list).unwrap();
    let found = problems(&docs[0]);
    assert!(
        found
            .iter()
            .all(|p| p.starts_with("policies[1].metadata.name: ")),
        "{found:?}"
    );
    // status (what `get -o json` prints) is accepted and dropped.
    let fixed = list.replace("Bad!", "b");
    assert_eq!(
        names(&read_str(&[Source::Stdin], &fixed).unwrap()),
        ["a", "b"]
    );
    let empty = read_str(&[Source::Stdin], r#"{"policies":[]}"#).unwrap();
    assert_eq!(names(&empty), Vec::<String>::new());
}
