//! `turnpike config export|import`: the managed configuration as YAML.

use std::path::Path;

use anyhow::Context;
use turnpike_store::declarative::{self, Document};
use turnpike_store::{Actor, StoreError};

use crate::config::Config;
use crate::platform::open_store;

/// Writes the managed configuration as YAML to `output` or stdout. The document holds
/// the TLS certificates' private keys, so a file is made readable by its owner only.
pub async fn export(config: &Config, output: Option<&Path>) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let doc = declarative::export(store.db()).await?;
    let yaml = yaml_serde::to_string(&doc).context("serializing the configuration")?;
    match output {
        Some(path) => write_private(path, &yaml).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{yaml}"),
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600, also when the file exists with another
/// mode: the mode changes before anything is written into it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Parses a declarative document, naming the line of a syntax or type error.
pub fn parse(text: &str) -> anyhow::Result<Document> {
    yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Imports `file`: prints the plan, and applies it unless `dry_run`.
pub async fn import(config: &Config, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc = parse(&text).with_context(|| format!("{} is not a valid configuration document", file.display()))?;
    let store = open_store(config).await?;
    let change = store.change(&Actor("config-import".into())).await?;
    let plan = declarative::plan(change.txn(), &doc, change.target_policy()).await.map_err(explain)?;
    for step in &plan.steps {
        println!("{step}");
    }
    println!("{} change(s), {} unchanged", plan.steps.len(), plan.unchanged);
    if dry_run {
        println!("dry run: nothing written");
        return Ok(());
    }
    declarative::apply(&change, &plan).await.map_err(explain)?;
    if let Some(snapshot) = change.commit().await? {
        println!("configuration snapshot {} compiled", snapshot.version);
    }
    Ok(())
}

fn explain(err: StoreError) -> anyhow::Error {
    match err {
        StoreError::Invalid(errors) => anyhow::anyhow!(
            "the document was refused; nothing was written:\n{}",
            errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
        ),
        other => anyhow::anyhow!("{other}; nothing was written"),
    }
}
