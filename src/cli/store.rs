//! `railyard store migrate`: copies everything one store holds (every table, ids and the order of history, the
//! secret-digest key) into another, empty one: a single-host SQLite installation into the PostgreSQL that several
//! replicas share, or back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use railyard::store::{DATABASE_FILE, Store, StoreLocation};

/// Copies the store at `from` into the empty store at `to`. A PostgreSQL password comes from the URL, the side's
/// password file, or `PGPASSWORD`; none is ever printed.
pub async fn migrate(
    from: &str,
    to: &str,
    from_password_file: Option<PathBuf>,
    to_password_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let from = StoreLocation::parse(from).context("--from")?;
    let to = StoreLocation::parse(to).context("--to")?;
    if from == to {
        anyhow::bail!("--from and --to both name {}; name two different stores", from.shown());
    }
    if let StoreLocation::Sqlite(dir) = &from
        && !dir.join(DATABASE_FILE).is_file()
    {
        anyhow::bail!(
            "there is no store to copy in {}: {} does not exist; give --from the state directory of the installation",
            from.shown(),
            dir.join(DATABASE_FILE).display()
        );
    }
    if let StoreLocation::Sqlite(dir) = &to {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let source = Store::connect(&from, read_password(from_password_file.as_deref())?).await?;
    let target = Store::connect(&to, read_password(to_password_file.as_deref())?).await?;
    let dump = source.dump().await?;
    target.load(&dump).await?;
    println!(
        "copied {rows} rows from {from} to {to}: {syncs} syncs, {deliveries} webhook deliveries, {environments} \
         environments, {keys} shared keys and the rest",
        rows = dump.rows(),
        from = from.shown(),
        to = to.shown(),
        syncs = dump.syncs.len(),
        deliveries = dump.deliveries.len(),
        environments = dump.environments.len(),
        keys = dump.shared_keys.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The password in `file` (its trailing newline dropped), when one is named.
fn read_password(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file).with_context(|| {
        format!("cannot read the password file {}; check the path and its permissions", file.display())
    })?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}
