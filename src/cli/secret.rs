//! `railyard secret`: encrypt, decrypt and edit SOPS files with age keys.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use railyard::secrets::sops;

use super::args::SecretAction;

/// Runs one `railyard secret` action.
pub fn secret(action: SecretAction) -> anyhow::Result<ExitCode> {
    match action {
        SecretAction::Encrypt { file, recipients, in_place } => encrypt(&file, &recipients, in_place)?,
        SecretAction::Decrypt { file } => decrypt(&file)?,
        SecretAction::Edit { file, recipients, keep_recipients } => edit(&file, &recipients, keep_recipients)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Encrypts a plain file for `recipients`, else the `.sops.yaml` creation rule's, else your own keys'.
fn encrypt(file: &Path, recipients: &[String], in_place: bool) -> anyhow::Result<()> {
    let values = sops::parse_plain(&file.display().to_string(), &read(file)?)?;
    let mut recipients: Vec<_> = recipients.iter().map(|r| sops::parse_recipient(r)).collect::<Result<_, _>>()?;
    if recipients.is_empty() {
        recipients = sops::creation_rule_recipients(file)?;
    }
    if recipients.is_empty() {
        recipients = sops::identities(None)?.iter().map(|identity| identity.to_public()).collect();
    }
    let document = sops::encrypt(&values, &recipients, chrono::Utc::now())?;
    if in_place {
        std::fs::write(file, document).with_context(|| format!("cannot write {}", file.display()))?;
    } else {
        print!("{document}");
    }
    Ok(())
}

fn decrypt(file: &Path) -> anyhow::Result<()> {
    let values = sops::decrypt(&file.display().to_string(), &read(file)?, &sops::identities(None)?)?;
    print!("{}", sops::render_plain(&values));
    Ok(())
}

/// Opens the file, lets $EDITOR change the plain values, and encrypts them again under the same data key.
fn edit(file: &Path, recipients: &[String], keep_recipients: bool) -> anyhow::Result<()> {
    let text = read(file)?;
    let name = file.display().to_string();
    let identities = sops::identities(None)?;
    let opened = sops::open(&name, &text, &identities)?;
    let proven = vouched_recipients(file, recipients, &identities, &opened)?;
    let now = chrono::Utc::now();
    // Refused before the editor opens, so that no edit is lost to it.
    sops::reencrypt(&name, &opened, &opened.values, &proven, keep_recipients, now)?;
    let scratch = tempfile::Builder::new().suffix(".yaml").tempfile().context("cannot make a temporary file")?;
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(scratch.path(), sops::render_plain(&opened.values))?;
    run_editor(scratch.path(), file)?;
    let edited = sops::parse_plain(&name, &std::fs::read_to_string(scratch.path())?)?;
    std::fs::write(file, sops::reencrypt(&name, &opened, &edited, &proven, keep_recipients, now)?)?;
    Ok(())
}

/// The recipients railyard can vouch for: `--age`, the creation rule's, and your own keys where they already hold
/// a stanza.
fn vouched_recipients(
    file: &Path,
    recipients: &[String],
    identities: &[age::x25519::Identity],
    opened: &sops::Opened,
) -> anyhow::Result<Vec<age::x25519::Recipient>> {
    let mut proven: Vec<_> = recipients.iter().map(|r| sops::parse_recipient(r)).collect::<Result<_, _>>()?;
    proven.extend(sops::creation_rule_recipients(file)?);
    // Your own keys vouch for the stanzas they already have; they are not added where they were not.
    proven.extend(
        identities
            .iter()
            .map(age::x25519::Identity::to_public)
            .filter(|own| opened.stanzas.iter().any(|stanza| stanza.recipient.trim() == own.to_string())),
    );
    proven.sort_by_key(ToString::to_string);
    proven.dedup_by_key(|recipient| recipient.to_string());
    Ok(proven)
}

/// Runs $EDITOR (else vi) on `scratch`; `file` is named when the editor fails.
fn run_editor(scratch: &Path, file: &Path) -> anyhow::Result<()> {
    let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".to_owned());
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("{editor} \"$1\""), "edit"])
        .arg(scratch)
        .status()
        .with_context(|| format!("cannot run the editor `{editor}`"))?;
    if !status.success() {
        anyhow::bail!("the editor exited with {status}; {} is unchanged", file.display());
    }
    Ok(())
}
