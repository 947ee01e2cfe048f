//! SOPS documents encrypted for age recipients, read and written exactly as sops 3.x does, so that files made by
//! sops (or Flux's and doco-cd's users) work here unchanged and files made here open in sops: a data key encrypted
//! to each age recipient (ASCII-armored), each value AES-256-GCM with a 32-byte IV and the value's key path
//! (`name:`) as additional data, written `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`, and a MAC: the SHA-512 of
//! the plaintext values in document order, upper-case hex, encrypted with the `lastmodified` time as additional
//! data. A file whose MAC does not match is refused. Only flat documents (`NAME: value`) are secret files here.
//! Decrypted values live in memory only.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, aead::consts::U32};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use sha2::{Digest, Sha512};

/// sops's AES-256-GCM: a 32-byte nonce.
type SopsCipher = AesGcm<Aes256, U32>;

/// The version written into files made here (what sops reads them as).
const WRITTEN_VERSION: &str = "3.9.0";

/// Why a SOPS document, a key or a recipient could not be used; each names the file or key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    /// `reason` says what in the document is wrong (written here, or the repository reader's refusal).
    #[error("{file}: not a SOPS document: {reason}")]
    Format { file: String, reason: String },
    #[error("{file}: not a SOPS document: {source}")]
    Yaml {
        file: String,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{file}: not a SOPS document: its `sops` block: {source}")]
    Metadata {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: not a SOPS document: path_regex: {source}")]
    PathRegex {
        file: String,
        #[source]
        source: regex::Error,
    },
    #[error(
        "{file}: no age identity{} opens it; give the key with SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, \
         ~/.config/sops/age/keys.txt or the settings file's sops.identities (a file for previews or for another \
         branch's environment must be encrypted for that scope's own recipient)",
        .scope.as_ref().map(|scope| format!(" of {scope}")).unwrap_or_default()
    )]
    NoKey { file: String, scope: Option<String> },
    #[error("{file}: {scope} has no age key: {how}")]
    NoScopeKey { file: String, scope: String, how: String },
    #[error(
        "{file} is also encrypted for {}, which railyard cannot vouch for (not your key, not --age, not the \
         .sops.yaml creation rule): someone may have added it to get the next data key. Remove the stanza, add the \
         recipient with --age if it is yours, or pass --keep-recipients to keep the stanzas as they are (they are \
         kept byte for byte, never encrypted anew)",
        .unproven.join(", ")
    )]
    UnprovenRecipients { file: String, unproven: Vec<String> },
    #[error("{file}: the value of `{name}` does not decrypt ({source}); the file is damaged or was edited by hand")]
    Value {
        file: String,
        name: String,
        #[source]
        source: ValueError,
    },
    #[error("{file}: the MAC does not match its values; the file was changed outside sops: refused")]
    Mac { file: String },
    #[error("age key {source_name}: {source}")]
    KeyFile {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    /// `reason` is age's own word on the line (it has no error type).
    #[error("age key {source_name}: a line is not an AGE-SECRET-KEY-1… key ({reason})")]
    NotAKey { source_name: String, reason: &'static str },
    #[error("cannot encrypt: no age recipient: pass --age age1… or write a .sops.yaml creation rule")]
    NoRecipient,
    #[error("cannot encrypt: `{text}` is not an age recipient (age1…): {reason}")]
    NotARecipient { text: String, reason: &'static str },
    #[error("cannot encrypt: cannot read {path}: {source}; check its permissions")]
    SopsConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encrypt: {0}")]
    Encrypt(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// AES-GCM's error carries nothing more to say.
    #[error("cannot encrypt: AES-GCM refused the value")]
    Cipher,
}

/// Why one `ENC[…]` value does not decrypt.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("not an ENC[AES256_GCM,…] value")]
    NotEncrypted,
    #[error("no `{0}` in the value")]
    MissingField(&'static str),
    #[error("{field} {source}")]
    Base64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the IV or the tag has the wrong length")]
    WrongLength,
    #[error("the data key has the wrong length")]
    KeyLength,
    /// AES-GCM's error carries nothing more to say.
    #[error("authentication failed")]
    Authentication,
    #[error("not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
}

/// A decrypted value: its name and text. Debug shows the name only.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plain").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The top level of a document, in order.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a mapping of names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    age: Vec<AgeStanza>,
    lastmodified: String,
    mac: String,
    #[serde(default)]
    unencrypted_suffix: Option<String>,
}

/// One age stanza of a document: the recipient it claims and the data key encrypted (ASCII-armored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgeStanza {
    #[serde(default)]
    pub recipient: String,
    pub enc: String,
}

/// Whether `text` is a SOPS document (it has a top-level `sops:` block).
pub fn is_sops_document(text: &str) -> bool {
    text.lines().any(|line| line.trim_end() == "sops:")
}

/// The values of SOPS document `text` (named `file` in errors), decrypted with one of `identities`.
pub fn decrypt(file: &str, text: &str, identities: &[age::x25519::Identity]) -> Result<Vec<Plain>, SopsError> {
    open(file, text, identities).map(|opened| opened.values)
}

/// A document opened: its values, its data key and its age stanzas, so that an edit can keep the data key and the
/// stanzas as sops does. Debug shows neither values nor key.
pub struct Opened {
    pub values: Vec<Plain>,
    data_key: Vec<u8>,
    pub stanzas: Vec<AgeStanza>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened").field("values", &self.values).field("stanzas", &self.stanzas.len()).finish()
    }
}

/// Opens SOPS document `text` (named `file` in errors) with one of `identities`, checking its MAC.
pub fn open(file: &str, text: &str, identities: &[age::x25519::Identity]) -> Result<Opened, SopsError> {
    let format = |reason: String| SopsError::Format { file: file.to_owned(), reason };
    let Ordered(entries) = parse_yaml(file, text)?;
    let metadata = entries
        .iter()
        .find(|(name, _)| name == "sops")
        .map(|(_, metadata)| serde_json::from_value::<Metadata>(metadata.clone()))
        .ok_or_else(|| format("it has no `sops` block".to_owned()))?
        .map_err(|source| SopsError::Metadata { file: file.to_owned(), source })?;
    let key = data_key(file, &metadata, identities)?;
    let suffix = metadata.unencrypted_suffix.as_deref().unwrap_or("_unencrypted");
    let mut plain = Vec::new();
    let mut mac = Sha512::new();
    for (name, value) in entries.iter().filter(|(name, _)| name != "sops") {
        let text = match value {
            serde_json::Value::String(text) if !name.ends_with(suffix) => {
                let value_error = |source| SopsError::Value { file: file.to_owned(), name: name.clone(), source };
                let bytes = decrypt_value(&key, text, format!("{name}:").as_bytes()).map_err(value_error)?;
                String::from_utf8(bytes).map_err(|error| value_error(ValueError::NotUtf8(error)))?
            }
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) => number.to_string(),
            _ => return Err(format(format!("`{name}` is not a plain value; a secrets file holds NAME: value pairs"))),
        };
        mac.update(text.as_bytes());
        plain.push(Plain { name: name.clone(), value: text });
    }
    let expected = decrypt_value(&key, &metadata.mac, metadata.lastmodified.as_bytes())
        .map_err(|_| SopsError::Mac { file: file.to_owned() })?;
    let computed = hex::encode_upper(mac.finalize());
    if expected != computed.as_bytes() {
        return Err(SopsError::Mac { file: file.to_owned() });
    }
    Ok(Opened { values: plain, data_key: key, stanzas: metadata.age })
}

/// The data key, from the first age stanza one of `identities` opens.
fn data_key(file: &str, metadata: &Metadata, identities: &[age::x25519::Identity]) -> Result<Vec<u8>, SopsError> {
    for stanza in &metadata.age {
        let reader = age::armor::ArmoredReader::new(stanza.enc.as_bytes());
        let Ok(decryptor) = age::Decryptor::new(reader) else { continue };
        let Ok(mut opened) = decryptor.decrypt(identities.iter().map(|identity| identity as &dyn age::Identity)) else {
            continue;
        };
        let mut key = Vec::new();
        if opened.read_to_end(&mut key).is_ok() && key.len() == 32 {
            return Ok(key);
        }
    }
    Err(SopsError::NoKey { file: file.to_owned(), scope: None })
}

/// One `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` opened with `key` and additional data `aad`.
fn decrypt_value(key: &[u8], text: &str, aad: &[u8]) -> Result<Vec<u8>, ValueError> {
    let inner =
        text.strip_prefix("ENC[AES256_GCM,").and_then(|rest| rest.strip_suffix(']')).ok_or(ValueError::NotEncrypted)?;
    let field = |name: &'static str| {
        inner.split(',').find_map(|part| part.strip_prefix(name)).ok_or(ValueError::MissingField(name))
    };
    let decode =
        |name: &'static str| STANDARD.decode(field(name)?).map_err(|source| ValueError::Base64 { field: name, source });
    let (mut data, iv, tag) = (decode("data:")?, decode("iv:")?, decode("tag:")?);
    if iv.len() != 32 || tag.len() != 16 {
        return Err(ValueError::WrongLength);
    }
    data.extend_from_slice(&tag);
    let cipher = SopsCipher::new_from_slice(key).map_err(|_| ValueError::KeyLength)?;
    cipher.decrypt(GenericArray::from_slice(&iv), Payload { msg: &data, aad }).map_err(|_| ValueError::Authentication)
}

fn encrypt_value(key: &[u8], plain: &[u8], aad: &[u8]) -> Result<String, SopsError> {
    let iv: [u8; 32] = rand::random();
    let cipher = SopsCipher::new_from_slice(key).map_err(|_| SopsError::Cipher)?;
    let mut sealed =
        cipher.encrypt(GenericArray::from_slice(&iv), Payload { msg: plain, aad }).map_err(|_| SopsError::Cipher)?;
    let tag = sealed.split_off(sealed.len() - 16);
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:str]",
        STANDARD.encode(&sealed),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    ))
}

/// A SOPS document holding `values`, encrypted for `recipients` under a new data key, as sops writes one.
pub fn encrypt(
    values: &[Plain],
    recipients: &[age::x25519::Recipient],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, SopsError> {
    if recipients.is_empty() {
        return Err(SopsError::NoRecipient);
    }
    let key: [u8; 32] = rand::random();
    let stanzas = recipients.iter().map(|recipient| wrap_key(&key, recipient)).collect::<Result<Vec<_>, _>>()?;
    write_document(values, &key, &stanzas, now)
}

/// `opened` with `values` instead, under the same data key, as `sops edit` writes it: each stanza of a recipient in
/// `proven` is encrypted anew, every other stanza is refused unless `keep_others`, and then kept byte for byte (so a
/// stanza whose `enc` was garbage stays garbage and hands nobody the key); recipients of `proven` without a stanza
/// get one.
pub fn reencrypt(
    file: &str,
    opened: &Opened,
    values: &[Plain],
    proven: &[age::x25519::Recipient],
    keep_others: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, SopsError> {
    let proven_names: Vec<String> = proven.iter().map(ToString::to_string).collect();
    let unproven: Vec<String> = opened
        .stanzas
        .iter()
        .filter(|stanza| !proven_names.contains(&stanza.recipient.trim().to_owned()))
        .map(|stanza| {
            if stanza.recipient.is_empty() {
                "a stanza without a recipient".to_owned()
            } else {
                stanza.recipient.clone()
            }
        })
        .collect();
    if !unproven.is_empty() && !keep_others {
        return Err(SopsError::UnprovenRecipients { file: file.to_owned(), unproven });
    }
    let mut stanzas = Vec::new();
    for stanza in &opened.stanzas {
        match proven.iter().find(|recipient| recipient.to_string() == stanza.recipient.trim()) {
            Some(recipient) => stanzas.push(wrap_key(&opened.data_key, recipient)?),
            None => stanzas.push(stanza.clone()),
        }
    }
    for recipient in proven {
        if !stanzas.iter().any(|stanza| stanza.recipient == recipient.to_string()) {
            stanzas.push(wrap_key(&opened.data_key, recipient)?);
        }
    }
    write_document(values, &opened.data_key, &stanzas, now)
}

/// The data key encrypted (ASCII-armored) to `recipient`.
fn wrap_key(key: &[u8], recipient: &age::x25519::Recipient) -> Result<AgeStanza, SopsError> {
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|error| SopsError::Encrypt(Box::new(error)))?;
    let failed = |error: std::io::Error| SopsError::Encrypt(Box::new(error));
    let mut armored = Vec::new();
    let writer =
        age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor).map_err(failed)?;
    let mut sealing = encryptor.wrap_output(writer).map_err(failed)?;
    sealing.write_all(key).map_err(failed)?;
    sealing.finish().and_then(|armor| armor.finish()).map_err(failed)?;
    Ok(AgeStanza { recipient: recipient.to_string(), enc: String::from_utf8_lossy(&armored).into_owned() })
}

fn write_document(
    values: &[Plain],
    key: &[u8],
    stanzas: &[AgeStanza],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, SopsError> {
    let mut out = String::new();
    let mut mac = Sha512::new();
    for plain in values {
        out.push_str(&format!(
            "{}: {}\n",
            plain.name,
            encrypt_value(key, plain.value.as_bytes(), format!("{}:", plain.name).as_bytes())?
        ));
        mac.update(plain.value.as_bytes());
    }
    let lastmodified = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mac = encrypt_value(key, hex::encode_upper(mac.finalize()).as_bytes(), lastmodified.as_bytes())?;
    out.push_str("sops:\n    age:\n");
    for stanza in stanzas {
        out.push_str(&format!("        - recipient: {}\n          enc: |\n", stanza.recipient));
        for line in stanza.enc.lines() {
            out.push_str(&format!("            {line}\n"));
        }
    }
    out.push_str(&format!(
        "    lastmodified: \"{lastmodified}\"\n    mac: {mac}\n    unencrypted_suffix: _unencrypted\n    version: {WRITTEN_VERSION}\n"
    ));
    Ok(out)
}

/// The identities of one key file, and no other place: a scope's own key.
pub fn identities_of_file(path: &std::path::Path) -> Result<Vec<age::x25519::Identity>, SopsError> {
    read_identities(&path.display().to_string(), &read_key_file(path)?)
}

/// The age identities sops would use: `SOPS_AGE_KEY_FILE`, then `SOPS_AGE_KEY`, then
/// `~/.config/sops/age/keys.txt`, then `extra_file` (the settings file's `sopsAgeKeyFile`).
pub fn identities(extra_file: Option<&std::path::Path>) -> Result<Vec<age::x25519::Identity>, SopsError> {
    let mut found = Vec::new();
    if let Ok(path) = std::env::var("SOPS_AGE_KEY_FILE") {
        found.extend(read_identities(&path, &read_key_file(&PathBuf::from(&path))?)?);
    }
    if let Ok(keys) = std::env::var("SOPS_AGE_KEY") {
        found.extend(read_identities("SOPS_AGE_KEY", &keys)?);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let default = PathBuf::from(home).join(".config/sops/age/keys.txt");
        if default.is_file() {
            found.extend(read_identities(&default.display().to_string(), &read_key_file(&default)?)?);
        }
    }
    if let Some(path) = extra_file {
        found.extend(read_identities(&path.display().to_string(), &read_key_file(path)?)?);
    }
    Ok(found)
}

fn read_key_file(path: &std::path::Path) -> Result<String, SopsError> {
    std::fs::read_to_string(path)
        .map_err(|source| SopsError::KeyFile { source_name: path.display().to_string(), source })
}

/// The `AGE-SECRET-KEY-1…` lines of `text` (comments and blank lines skipped).
pub fn read_identities(source_name: &str, text: &str) -> Result<Vec<age::x25519::Identity>, SopsError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            age::x25519::Identity::from_str(line)
                .map_err(|reason| SopsError::NotAKey { source_name: source_name.to_owned(), reason })
        })
        .collect()
}

/// The `NAME: value` pairs of a plain YAML document, in order (what `railyard secret encrypt` takes).
pub fn parse_plain(file: &str, text: &str) -> Result<Vec<Plain>, SopsError> {
    let format = |reason: String| SopsError::Format { file: file.to_owned(), reason };
    let Ordered(entries) = parse_yaml(file, text)?;
    entries
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => Ok(Plain { name, value: text }),
            serde_json::Value::Number(number) => Ok(Plain { name, value: number.to_string() }),
            serde_json::Value::Bool(flag) => Ok(Plain { name, value: flag.to_string() }),
            _ => Err(format(format!("`{name}` is not a plain value; a secrets file holds NAME: value pairs"))),
        })
        .collect()
}

/// `values` as a plain YAML document (what `railyard secret decrypt` prints), each value quoted.
pub fn render_plain(values: &[Plain]) -> String {
    values.iter().map(|plain| format!("{}: {}\n", plain.name, serde_json::Value::String(plain.value.clone()))).collect()
}

/// YAML `text` of `file` as `T`.
fn parse_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, SopsError> {
    serde_saphyr::from_str(text).map_err(|error| SopsError::Yaml { file: file.to_owned(), source: Box::new(error) })
}

pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, SopsError> {
    age::x25519::Recipient::from_str(text.trim())
        .map_err(|reason| SopsError::NotARecipient { text: text.to_owned(), reason })
}

/// The recipients of the first `creation_rules` entry of a `.sops.yaml` whose `path_regex` (none: any) matches
/// `path`, looked for in `path`'s directory and its parents, as sops looks.
pub fn creation_rule_recipients(path: &std::path::Path) -> Result<Vec<age::x25519::Recipient>, SopsError> {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(config) = absolute.ancestors().skip(1).map(|dir| dir.join(".sops.yaml")).find(|file| file.is_file())
    else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&config)
        .map_err(|source| SopsError::SopsConfig { path: config.display().to_string(), source })?;
    let name = absolute.to_string_lossy().into_owned();
    for rule in creation_rules(&config.display().to_string(), &text)? {
        if rule.path.as_ref().is_none_or(|pattern| pattern.is_match(&name))
            && let Some(recipients) = rule.age
        {
            return recipients.split(',').filter(|r| !r.trim().is_empty()).map(parse_recipient).collect();
        }
    }
    Ok(Vec::new())
}

/// One `creation_rules` entry of a `.sops.yaml`.
struct CreationRule {
    path: Option<regex::Regex>,
    age: Option<String>,
}

fn creation_rules(file: &str, text: &str) -> Result<Vec<CreationRule>, SopsError> {
    let rules: serde_json::Value = parse_yaml(file, text)?;
    rules["creation_rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let path = rule["path_regex"]
                .as_str()
                .map(|pattern| {
                    regex::Regex::new(pattern).map_err(|source| SopsError::PathRegex { file: file.to_owned(), source })
                })
                .transpose()?;
            Ok(CreationRule { path, age: rule["age"].as_str().map(str::to_owned) })
        })
        .collect()
}

/// The `path_regex` of each creation rule of the repository's `.sops.yaml` (none when it has none, or it does not
/// read: the files under `secrets/` still serve).
pub fn creation_rule_patterns(files: &[crate::model::RepoFile]) -> Vec<regex::Regex> {
    let Some(config) = files.iter().find(|file| file.path == ".sops.yaml") else { return Vec::new() };
    let crate::model::FileContent::Bytes(bytes) = &config.content else { return Vec::new() };
    creation_rules(".sops.yaml", &String::from_utf8_lossy(bytes))
        .map(|rules| rules.into_iter().filter_map(|rule| rule.path).collect())
        .unwrap_or_default()
}
