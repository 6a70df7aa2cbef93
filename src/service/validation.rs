//! Input validation. Every check records into one [`Fields`] so a client learns about every
//! invalid field at once.

use crate::error::{AppError, AppResult, FieldCode, FieldError, FieldErrors};
use std::borrow::Cow;
use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;

const TEXT_MAX: usize = 100;

/// What a check of one field gives: the value to store, or why it is refused.
pub type Checked<T> = Result<T, FieldError>;

fn refused<T>(code: FieldCode, message: impl Into<Cow<'static, str>>) -> Checked<T> {
    Err(FieldError::new(code, message))
}

#[derive(Default)]
pub struct Fields(FieldErrors);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records why `field` was refused, unless a reason for it is recorded already.
    pub fn add(&mut self, field: &str, code: FieldCode, message: impl Into<Cow<'static, str>>) {
        self.refuse(field, FieldError::new(code, message));
    }

    fn refuse(&mut self, field: &str, error: FieldError) {
        self.0.entry(field.to_owned()).or_insert(error);
    }

    /// Records a check's failure, keeping its successful value.
    pub fn check<T>(&mut self, field: &str, result: Checked<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.refuse(field, error);
                None
            }
        }
    }

    /// Records the field errors of a refused `result`, keeping a successful value; any other
    /// error passes through.
    pub fn absorb<T>(&mut self, result: AppResult<T>) -> AppResult<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(AppError::BadInput(errors)) => {
                for (field, error) in errors {
                    self.refuse(&field, error);
                }
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    pub fn into_result(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::BadInput(self.0))
        }
    }

    pub fn into_conflict(self) -> AppResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Conflict(self.0))
        }
    }
}

/// The fields every account has, validated and normalised.
pub struct Profile {
    pub username: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

/// Largest page a list returns, and the size when `first` is not given.
pub const MAX_PAGE: i32 = 100;
pub const DEFAULT_PAGE: i32 = 20;

/// `first` of a list: [`DEFAULT_PAGE`] when not given, else at most [`MAX_PAGE`].
pub fn page_size(first: Option<i32>) -> AppResult<u64> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    u64::try_from(first)
        .ok()
        .filter(|&size| size <= MAX_PAGE as u64)
        .ok_or_else(|| {
            AppError::field(
                "first",
                FieldCode::Range,
                format!("must be between 0 and {MAX_PAGE}"),
            )
        })
}

/// Checks the fields every new account has (created, registered or imported alike), recording
/// each failure in `fields`; `Some` only when all pass.
pub fn profile(
    fields: &mut Fields,
    username_text: &str,
    email_text: &str,
    first_name: Option<&str>,
    last_name: Option<&str>,
    phone: Option<&str>,
) -> Option<Profile> {
    let username = fields.check("username", username(username_text));
    let email = fields.check("email", email(email_text));
    let first_name = fields.check("firstName", optional_text(first_name));
    let last_name = fields.check("lastName", optional_text(last_name));
    let phone = fields.check("phone", self::phone(phone));
    Some(Profile {
        username: username?,
        email: email?,
        first_name: first_name?,
        last_name: last_name?,
        phone: phone?,
    })
}

/// NUL cannot be stored by PostgreSQL; refusing it here keeps it from becoming a driver error.
fn no_nul(text: &str) -> Checked<()> {
    if text.contains('\0') {
        refused(FieldCode::Format, "must not contain NUL characters")
    } else {
        Ok(())
    }
}

/// 3–32 ASCII letters, digits, `_`, `.`, `-`, at least one a letter or digit (`...` names
/// nobody). Returns the name as given.
pub fn username(text: &str) -> Checked<String> {
    no_nul(text)?;
    // Said apart, and first: a phone keyboard's autocompletion leaves a space after the last
    // word, which neither the length nor a list of the characters allowed points at.
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed != text {
        return refused(FieldCode::Format, "must not begin or end with whitespace");
    }
    let length = text.chars().count();
    if !(3..=32).contains(&length) {
        return refused(FieldCode::Length, "must be 3 to 32 characters");
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return refused(
            FieldCode::Format,
            "may contain only ASCII letters (A-Z, a-z), digits, '_', '.' and '-'",
        );
    }
    if !text.chars().any(|c| c.is_ascii_alphanumeric()) {
        return refused(FieldCode::Format, "must contain a letter or a digit");
    }
    Ok(text.to_owned())
}

/// A name as a new password is compared with it when the input holds a refused field (this
/// one or another): trimmed and normalised as stored, without decoding the domain (only the
/// local part is compared, and the decoding is quadratic); nothing for one longer than any
/// that could be stored.
pub fn refused_name(text: &str) -> String {
    if text.len() > EMAIL_TYPED_MAX_BYTES {
        return String::new();
    }
    normalised(text.trim())
}

/// The form a login or an email address is stored and looked up in: trimmed, NFKC-normalised
/// and lower-cased, so addresses that look the same (a full-width letter, an accent typed as
/// one character or as two) are one account; a domain's labels in their ASCII form
/// (`xn--mnchen-3ya`) are written as the letters they encode (`münchen`), so one domain has
/// one form. Callers bound `text` first: the decoding is quadratic in a label's length.
pub fn login_key(text: &str) -> String {
    let key = normalised(text.trim());
    let Some((local, domain)) = key.rsplit_once('@') else {
        return key;
    };
    // IDNA's ideographic full stop separates labels as the dot does (its half-width form is
    // this one once normalised).
    let domain = domain.replace('\u{3002}', ".");
    if !domain.split('.').any(is_ascii_form) {
        return format!("{local}@{domain}");
    }
    let labels: Vec<String> = domain
        .split('.')
        .map(|label| {
            label
                .strip_prefix(ACE_PREFIX)
                .and_then(idna::punycode::decode_to_string)
                // IDNA encodes only labels with a letter beyond ASCII.
                .filter(|decoded| !decoded.is_ascii())
                .map(|decoded| normalised(&decoded))
                // One that normalises into two labels (U+2024 ONE DOT LEADER is a dot to
                // NFKC) encodes no label: left as it is, to be refused.
                .filter(|decoded| !decoded.contains('.'))
                .unwrap_or_else(|| label.to_owned())
        })
        .collect();
    format!("{local}@{}", labels.join("."))
}

/// What starts a domain label written in its ASCII form (IDNA's ACE prefix).
const ACE_PREFIX: &str = "xn--";

fn is_ascii_form(label: &str) -> bool {
    label.starts_with(ACE_PREFIX)
}

fn normalised(text: &str) -> String {
    let lower: String = text.nfkc().collect::<String>().to_lowercase();
    // Lower-casing can leave a sequence NFKC would write differently (U+0130 → i + U+0307).
    lower.nfkc().collect()
}

/// What `login` takes, as its [`login_key`]; bounded before and after normalising, since NFKC
/// can make one character eighteen. Before, by what [`email`] takes as typed, so every address
/// that could be stored can be typed again to log in.
pub fn login(text: &str) -> Checked<String> {
    const MAX_BYTES: usize = 320;
    const MESSAGE: &str = "must be a username or an email address";
    no_nul(text).map_err(|_| FieldError::new(FieldCode::Format, MESSAGE))?;
    let key = (text.len() <= EMAIL_TYPED_MAX_BYTES)
        .then(|| login_key(text))
        .filter(|key| key.len() <= MAX_BYTES);
    match key {
        // A form's blank box, as an empty password is: missing, not a login to count.
        Some(key) if key.is_empty() => refused(FieldCode::Required, "is required"),
        Some(key) => Ok(key),
        None => refused(
            FieldCode::Length,
            "is too long for a username or an email address",
        ),
    }
}

/// The key a username (`email` false) or an email names a user by, read as a login reads it;
/// `None` for text that could not be one of its kind (a username has no `@`, an email one), so
/// a lookup finds nobody rather than the other kind.
pub fn lookup_key(text: &str, email: bool) -> Option<String> {
    login(text).ok().filter(|key| key.contains('@') == email)
}

/// A `users` search term: at most 200 characters (each costs the trigram index work).
pub fn search(text: &str) -> Checked<()> {
    no_nul(text)?;
    if text.chars().count() > 200 {
        return refused(FieldCode::Length, "must be at most 200 characters");
    }
    Ok(())
}

/// Characters that show as nothing (Unicode's default-ignorable code points: zero-width
/// spaces and joiners, bidirectional controls, variation selectors, the byte-order mark),
/// and the visible ones fonts draw as nothing (Hangul fillers, the musical null notehead):
/// two addresses differing only by them would look identical.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D159}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Controls that reorder how text around them is shown (a name could make the text after it
/// in a list read backwards), and the line and paragraph separators. Zero-width joiners stay
/// allowed in names: some scripts need them.
fn reorders(c: char) -> bool {
    matches!(c, '\u{61C}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The longest address [`email`] reads, as typed before normalising.
const EMAIL_TYPED_MAX_BYTES: usize = 4 * 254;

/// A plausible address (one `@`, a dotted domain, no spaces or invisible characters), returned
/// as its [`login_key`]. Bounded before normalising too: decoding a domain label's ASCII form
/// takes time quadratic in its length, and no address of 254 bytes is typed in four times that.
pub fn email(text: &str) -> Checked<String> {
    const MAX_BYTES: usize = 254;
    no_nul(text)?;
    let too_long = || refused(FieldCode::Length, "must be at most 254 bytes");
    if text.len() > EMAIL_TYPED_MAX_BYTES {
        return too_long();
    }
    let email = login_key(text);
    let invalid = || refused(FieldCode::Format, "must be a valid email address");
    if email.len() > MAX_BYTES {
        return too_long();
    }
    // Named, since the address looks valid on screen.
    if email.chars().any(|c| c.is_control() || invisible(c)) {
        return refused(
            FieldCode::Format,
            "must be a valid email address: it holds control or invisible characters",
        );
    }
    if email.chars().any(char::is_whitespace) {
        return invalid();
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid();
    };
    let starts_with_mark = |part: &str| part.chars().next().is_some_and(is_mark);
    // Labels of letters (any script, with their combining marks after them), digits and inner
    // hyphens.
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && !starts_with_mark(label)
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || is_mark(c))
        });
    // What an address may hold unquoted (RFC 5322's atext, and any visible non-ASCII
    // character as RFC 6531 allows), in dot-separated parts none of which is empty.
    let local_ok = !local.is_empty()
        && local.split('.').all(|part| {
            !part.is_empty()
                && !starts_with_mark(part)
                && part.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || "!#$%&'*+-/=?^_`{|}~".contains(c)
                        || (!c.is_ascii() && (visible(c) || is_mark(c)))
                })
        });
    // A label left in its ASCII form after `login_key` encodes nothing; a last label of
    // digits alone makes an IP address (or no name DNS gives), not a domain.
    let numeric_end = domain
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_numeric() || is_mark(c)));
    if !local_ok || !domain_ok || numeric_end || domain.split('.').any(is_ascii_form) {
        return invalid();
    }
    // `аlice` with a Cyrillic `а` would be another account that reads as `alice`.
    if !local.split('.').chain(domain.split('.')).all(one_script) {
        return refused(
            FieldCode::Format,
            "must not mix scripts (such as Latin and Cyrillic) within a part of the address",
        );
    }
    // As SMTP and DNS allow: DNS carries a label in its ASCII form (`xn--…`), which is longer
    // than the letters for a few, shorter for many.
    let dns_length = |label: &str| {
        if label.is_ascii() {
            Some(label.len())
        } else {
            idna::punycode::encode_str(label).map(|encoded| ACE_PREFIX.len() + encoded.len())
        }
    };
    if local.len() > 64
        || domain
            .split('.')
            .any(|label| dns_length(label).is_none_or(|length| length > 63))
    {
        return refused(
            FieldCode::Length,
            "must have at most 64 bytes before the @ and 63 in each part of the domain (in its xn-- form)",
        );
    }
    Ok(email)
}

/// One script to a part, as UTS #39's single-script test has it (Japanese and Korean mixing
/// their own scripts), or Latin letters beside Japanese, Chinese or Korean, which are written
/// together (its "highly restrictive" level, as browsers judge domain names).
fn one_script(part: &str) -> bool {
    if part.is_single_script() {
        return true;
    }
    use unicode_script::{Script, UnicodeScript};
    let rest: String = part
        .chars()
        .filter(|c| c.script() != Script::Latin)
        .collect();
    let set = rest.as_str().resolve_script_set();
    rest.as_str().is_single_script()
        && (set.jpan || set.hanb || set.kore)
        && !posing_beside_latin(part)
}

/// Whether a character that reads as Latin stands beside a Latin letter: `alice〇`, not the
/// `ー` of `abcマート`.
fn posing_beside_latin(part: &str) -> bool {
    use unicode_script::{Script, UnicodeScript};
    let chars: Vec<char> = part.chars().collect();
    let latin = |at: Option<&char>| at.is_some_and(|c| c.script() == Script::Latin);
    chars.iter().enumerate().any(|(at, &c)| {
        reads_as_latin(c)
            && (latin(at.checked_sub(1).and_then(|i| chars.get(i))) || latin(chars.get(at + 1)))
    })
}

/// Characters of Japanese and Chinese that read as Latin letters, digits or a hyphen beside
/// them (`alice〇`, `paypa丨`, `adm工n`), as browsers' checks of domain names list them.
fn reads_as_latin(c: char) -> bool {
    matches!(
        c,
        '\u{3007}' // 〇
            | '\u{4E00}' // 一
            | '\u{4E28}' // 丨
            | '\u{4E36}' // 丶
            | '\u{4E3F}' // 丿
            | '\u{4E59}' // 乙
            | '\u{4E5A}' // 乚
            | '\u{4E85}' // 亅
            | '\u{5DE5}' // 工
            | '\u{53E3}' // 口
            | '\u{30FC}' // ー
            | '\u{30CE}' // ノ
            | '\u{30BD}' // ソ
            | '\u{30F3}' // ン
            | '\u{30A8}' // エ
            | '\u{30ED}' // ロ
    )
}

/// A character that draws something of its own: a letter, digit, punctuation mark or symbol
/// (not a space, a format or private-use character, an unassigned code point, or one that
/// shows as nothing, such as the Braille blank).
fn visible(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup as Group, UnicodeGeneralCategory};
    matches!(
        c.general_category_group(),
        Group::Letter | Group::Number | Group::Punctuation | Group::Symbol
    ) && !invisible(c)
        && c != '\u{2800}'
}

/// A combining mark, which belongs after the character it marks.
fn is_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}

/// Whether `text` holds a character that shows as nothing, or a format character, with no
/// place in a name: a name holding one looks like another, and is found by neither's search.
/// Kept where a script or an emoji needs them, between or after characters beyond ASCII: the
/// joiners (ZWJ, ZWNJ, Mongolian's vowel separator, and the zero-width space that Khmer, Thai
/// and their neighbours put between words), the variation selectors (also after a keycap's
/// ASCII digit, `1️⃣`), and the tags of the subdivision flags emoji keyboards offer (England,
/// Scotland, Wales); tags spelling anything else would be text nobody sees.
fn hides_characters(text: &str) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    const FLAGS: [&str; 3] = [
        "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
        "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        "\u{1F3F4}\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}",
    ];
    let mut rest = std::borrow::Cow::Borrowed(text);
    for flag in FLAGS {
        if rest.contains(flag) {
            rest = rest.replace(flag, "\u{1F3F4}").into();
        }
    }
    let chars: Vec<char> = rest.chars().collect();
    let beyond_ascii = |at: Option<&char>| at.is_some_and(|c| !c.is_ascii() && !c.is_whitespace());
    chars.iter().enumerate().any(|(at, &c)| {
        let before = at.checked_sub(1).and_then(|i| chars.get(i));
        let after = chars.get(at + 1);
        let kept = match c {
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{180E}' => {
                beyond_ascii(before) && beyond_ascii(after)
            }
            '\u{FE00}'..='\u{FE0F}'
            | '\u{E0100}'..='\u{E01EF}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}' => {
                beyond_ascii(before)
                    || (before.is_some_and(|b| b.is_ascii_digit() || "#*".contains(*b))
                        && after == Some(&'\u{20E3}'))
            }
            _ => false,
        };
        (invisible(c) || c == '\u{2800}' || c.general_category() == GeneralCategory::Format)
            && !kept
    })
}

/// Unassigned code points (the noncharacters among them) and private-use ones: no text here
/// needs them, and what they show differs from one device to the next.
fn unassigned(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Unassigned | GeneralCategory::PrivateUse
    )
}

/// 8–128 characters, used exactly as given (never trimmed or truncated).
fn password(text: &str) -> Checked<String> {
    no_nul(text)?;
    let length = text.chars().count();
    if !(8..=128).contains(&length) {
        return refused(FieldCode::Length, "must be 8 to 128 characters");
    }
    Ok(text.to_owned())
}

/// Characters of a password the strength estimate looks at: its cost grows steeply with length
/// (a password crafted of look-alike characters costs it most of a second at 64), and a prefix
/// this long that is guessable already makes the whole weak.
const ESTIMATE_CHARS: usize = 32;

/// A password being set for the account `username` / `email`: [`password`]'s rules, and not
/// containing the username or the email's local part (parts shorter than three characters are
/// too common to refuse). [`guessable`] is the costly rest of the policy.
pub fn new_password(text: &str, username: &str, email: &str) -> Checked<String> {
    let password = password(text)?;
    // Compared as addresses are stored, so the local part typed another way (an accent as
    // two characters, full-width letters) is found too.
    let lower = normalised(&password);
    for (part, what) in [(username, "username"), (local_part(email), "email address")] {
        let part = normalised(part);
        if part.chars().count() >= 3 && lower.contains(part.as_str()) {
            return refused(
                FieldCode::PersonalPassword,
                format!("must not contain the account's {what}"),
            );
        }
    }
    Ok(password)
}

fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}

/// Refuses `password` (one [`new_password`] let through) when it is one of the common or easily
/// guessed passwords zxcvbn knows, also given the account's username and email. CPU-heavy: run
/// off the async workers.
pub fn guessable(password: &str, username: &str, email: &str) -> Checked<()> {
    let prefix: String = password.chars().take(ESTIMATE_CHARS).collect();
    // Longer than the judged prefix, a name could not match in it.
    let inputs: Vec<String> = [username, local_part(email)]
        .into_iter()
        .filter(|input| input.chars().count() <= ESTIMATE_CHARS)
        .map(str::to_lowercase)
        .collect();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    if u8::from(zxcvbn::zxcvbn(&prefix, &inputs).score()) < 2 {
        return refused(
            FieldCode::WeakPassword,
            "is too common or too easy to guess",
        );
    }
    Ok(())
}

/// A box as given: an empty one is a form's blank box, nothing given.
pub fn filled(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|text| !text.is_empty())
}

/// A password given to be checked (login, re-verification): bounded like a new one before any
/// hashing, but not judged, since it was set under earlier rules. An empty one is a form's
/// blank box, not a guess: refused as missing, and counted nowhere.
pub fn given_password(text: &str) -> Checked<()> {
    if text.is_empty() {
        return refused(FieldCode::Required, "is required");
    }
    no_nul(text)?;
    if text.chars().count() > 128 {
        return refused(FieldCode::Length, "must be at most 128 characters");
    }
    Ok(())
}

/// Names: at most 100 characters, no control characters or bidirectional overrides; blank
/// means "not set".
pub fn optional_text(text: Option<&str>) -> Checked<Option<String>> {
    let Some(text) = text else { return Ok(None) };
    no_nul(text)?;
    let text = text.trim();
    if text.chars().count() > TEXT_MAX {
        return refused(
            FieldCode::Length,
            format!("must be at most {TEXT_MAX} characters"),
        );
    }
    if text
        .chars()
        .any(|c| c.is_control() || reorders(c) || unassigned(c))
        || hides_characters(text)
    {
        return refused(
            FieldCode::Format,
            "must not contain control or invisible characters, bidirectional overrides or unassigned code points",
        );
    }
    // Only characters that show as nothing would be a name nobody can see.
    if !text.is_empty() && !text.chars().any(visible) {
        return refused(FieldCode::Format, "must contain a visible character");
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// A phone number as people write one: 3–20 digits with spaces and `+ - ( ) . /` between
/// them, and an optional extension (`x12`, `ext. 12`). Returned trimmed; blank means "not set".
pub fn phone(text: Option<&str>) -> Checked<Option<String>> {
    // Full-width digits and signs (an East Asian keyboard's) and non-breaking or narrow
    // spaces (a number copied from a web page) are kept in their plain forms; bounded as kept.
    let plain: Option<String> = text.map(|text| text.nfkc().collect());
    let Some(text) = optional_text(plain.as_deref())? else {
        return Ok(None);
    };
    let lower = text.to_ascii_lowercase();
    let (number, extension) = lower.split_at(
        lower
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(lower.len()),
    );
    let extension_ok = extension.is_empty()
        || ["extension", "ext.", "ext", "x"].iter().any(|prefix| {
            extension.strip_prefix(prefix).is_some_and(|digits| {
                let digits = digits.trim_start();
                (1..=10).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            })
        });
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    let characters_ok = number
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()./".contains(c));
    if !characters_ok || !extension_ok {
        refused(
            FieldCode::Format,
            "must be a phone number: digits, spaces and + - ( ) . /, and an optional extension such as x12",
        )
    } else if !(3..=20).contains(&digits) {
        refused(FieldCode::Length, "must have 3 to 20 digits")
    } else {
        Ok(Some(text))
    }
}

/// An API token's name: 1–100 characters once trimmed, no control characters or bidirectional
/// overrides (a name could otherwise read backwards in a list). Returns it trimmed.
pub fn token_name(text: &str) -> Checked<String> {
    let text = text.trim();
    let length_ok = !text.is_empty() && text.chars().count() <= TEXT_MAX;
    if !length_ok
        || text
            .chars()
            .any(|c| c.is_control() || reorders(c) || unassigned(c))
        || hides_characters(text)
        || !text.chars().any(visible)
    {
        return refused(
            if length_ok {
                FieldCode::Format
            } else {
                FieldCode::Length
            },
            format!(
                "must be 1 to {TEXT_MAX} characters, some visible, without control or invisible characters, bidirectional overrides or unassigned code points"
            ),
        );
    }
    Ok(text.to_owned())
}

pub use crate::auth::totp::code_given;

/// A TOTP or recovery code as given: refused before anything is counted when it could never
/// be right. A blank one is a form's blank box, refused as missing, like an empty password.
pub fn second_factor_code(code: &str) -> Checked<()> {
    const MESSAGE: &str = "must be a TOTP or recovery code";
    if !code_given(code) {
        return refused(FieldCode::Required, "is required");
    }
    if code.contains('\0') {
        return refused(FieldCode::Format, MESSAGE);
    }
    if code.len() > 64 {
        return refused(FieldCode::Length, MESSAGE);
    }
    Ok(())
}

/// The first member `json` gives twice in one of its objects, at any depth, by its path from
/// the top (`variables.filter.role`, `3.role`). serde_json keeps the last, so
/// `{"role": "ADMIN", "role": "STANDARD"}` would be read as `STANDARD`, where anything reading
/// the same input first (a proxy's filter, a log reader, another tool) may take the first.
/// `None` for JSON without one, and for text that is no JSON.
pub fn repeated_member(json: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    /// Any JSON value at `path`, read only to find a repeated member.
    struct Walk<'p>(&'p mut Vec<String>);

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            loop {
                self.0.push(index.to_string());
                let more = items.next_element_seed(Walk(self.0))?;
                self.0.pop();
                if more.is_none() {
                    return Ok(());
                }
                index += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
            let mut names = std::collections::HashSet::new();
            while let Some(name) = members.next_key::<String>()? {
                self.0.push(name.clone());
                if !names.insert(name) {
                    return Err(A::Error::custom("a member given twice"));
                }
                members.next_value_seed(Walk(self.0))?;
                self.0.pop();
            }
            Ok(())
        }
    }

    let mut path = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    match Walk(&mut path).deserialize(&mut deserializer) {
        Err(err) if err.to_string().starts_with("a member given twice") => Some(path.join(".")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None).ok(), Some(20));
        assert_eq!(page_size(Some(0)).ok(), Some(0));
        assert_eq!(page_size(Some(100)).ok(), Some(100));
        for refused in [-1, 101, i32::MIN, i32::MAX] {
            let err = page_size(Some(refused)).expect_err("refused");
            assert!(
                matches!(&err, AppError::BadInput(f) if f.contains_key("first")),
                "{refused}"
            );
        }
    }

    #[test]
    fn usernames() {
        assert!(username("al").is_err());
        assert!(username("alice").is_ok());
        assert!(username("a.l-i_ce9").is_ok());
        assert!(username("al ice").is_err());
        assert!(username("al@ce").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("ali\0ce").is_err());
        for punctuation in ["...", "---", "_._"] {
            assert!(username(punctuation).is_err(), "{punctuation}");
        }
        assert!(username("_a_").is_ok());
        assert_eq!(refused_name(" ＡＬＩＣＥ@xn--bad"), "alice@xn--bad");
        assert_eq!(refused_name(&format!("a@xn--{}", "a".repeat(1_100))), "");
        // A space around the name is named as such.
        let long = format!("{} ", "a".repeat(32));
        for padded in ["alice ", " alice", "alice\u{a0}", "fr ", "ivy\n", &long] {
            let refusal = username(padded).expect_err(padded);
            assert_eq!(refusal.code, FieldCode::Format);
            assert!(
                refusal.message.contains("whitespace"),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn a_huge_email_is_refused_by_its_length_before_it_is_decoded() {
        let huge = format!("a@xn--{}", "a".repeat(1_000_000));
        let refusal = email(&huge).expect_err("too long");
        assert_eq!(refusal.code, FieldCode::Length);
    }

    #[test]
    fn emails() {
        assert_eq!(
            email(" Alice@Example.COM ").as_deref(),
            Ok("alice@example.com")
        );
        // An address that looks valid on screen is told why it is not.
        let hidden = email("al\u{200B}ice@example.com").map_err(|error| error.message);
        assert_eq!(
            hidden.as_ref().map_err(AsRef::as_ref),
            Err("must be a valid email address: it holds control or invisible characters")
        );
        for bad in [
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a b@c.d",
            "a@b@c.d",
            "a@.com",
            "a..b@example.com",
            ".alice@example.com",
            "alice.@example.com",
            "al<i>ce@example.com",
            "alice@exa_mple.com",
            "alice@ex<a>.com",
            "alice@-example.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        // One domain, one form: its ASCII form is stored as the letters it encodes.
        assert_eq!(email("Ada@XN--Mnchen-3ya.de"), Ok("ada@münchen.de".into()));
        assert_eq!(email("ada@münchen.de"), Ok("ada@münchen.de".into()));
        assert_eq!(login_key("ada@xn--mnchen-3ya.de"), "ada@münchen.de");
        // The local part is no domain.
        assert_eq!(
            login_key("xn--mnchen-3ya@example.com"),
            "xn--mnchen-3ya@example.com"
        );
        for bad in [
            "a@xn--.com",
            "a@xn--zz-.example.com",
            "a@\u{301}example.com",
            "\u{301}@example.com",
            "a\u{378}b@example.com",
            "\u{E000}@example.com",
            "\u{2800}@example.com",
            "owner\u{1D159}@example.com",
            // Look-alikes of `alice@example.com` with a Cyrillic letter in one part.
            "\u{430}lice@example.com",
            "alice@ex\u{430}mple.com",
            "alice@example.c\u{43E}m",
            "alice@xn--exmple-4nf.com",
            // Not one label: U+2024 ONE DOT LEADER is a dot once normalised.
            "a@xn--x-dha240v.com",
            // An IP address, or a last label DNS gives no name.
            "a@127.0.0.1",
            "a@example.123",
            "a@example.\u{663}\u{664}\u{665}",
            "a@example.xn--cibcd",
            "me@192.168.0.1\u{301}",
            "b@example.12\u{20E3}",
        ] {
            assert_eq!(
                email(bad).map_err(|e| e.code),
                Err(FieldCode::Format),
                "{bad:?}"
            );
        }
        // One script to a part, and scripts that are written together are one.
        for fine in [
            "\u{432}\u{430}\u{441}\u{44F}@\u{43F}\u{440}\u{438}\u{43C}\u{435}\u{440}.\u{440}\u{444}",
            "ivan.\u{438}\u{432}\u{430}\u{43D}@example.com",
            "\u{3084}\u{307E}\u{3060}\u{5C71}\u{7530}@example.jp",
            "\u{D64D}\u{AE38}\u{B3D9}\u{6D2A}@example.kr",
            "user42.\u{3084}\u{307E}@\u{4F8B}\u{3048}.jp",
        ] {
            assert!(email(fine).is_ok(), "{fine}");
        }
        // Latin beside Japanese, Chinese or Korean too, not beside Cyrillic.
        for written_together in [
            "user42+\u{3084}\u{307E}@example.jp",
            "info@abc\u{30DE}\u{30FC}\u{30C8}.jp",
            "taro\u{5C71}\u{7530}@example.jp",
            "jos\u{E9}\u{5C71}\u{7530}@example.jp",
            "\u{C0AC}\u{C6A9}\u{C790}user@example.kr",
        ] {
            assert!(email(written_together).is_ok(), "{written_together}");
        }
        assert!(email("abc\u{430}\u{5C71}@example.jp").is_err());
        // Unless what stands beside the Latin letters reads as one of them.
        for posing in [
            "alice\u{3007}@example.com",
            "paypal@paypa\u{4E28}.com",
            "adm\u{5DE5}n@example.com",
            "root\u{30FC}@example.com",
        ] {
            assert!(email(posing).is_err(), "{posing}");
        }
        // Alone, in their own scripts' words, they are letters like any other.
        assert!(email("\u{30EB}\u{30FC}\u{30C8}@\u{4F8B}\u{3048}.jp").is_ok());
        // IDNA's ideographic full stops are dots in a domain.
        assert_eq!(
            email("anna@münchen\u{3002}de"),
            Ok("anna@münchen.de".into())
        );
        assert_eq!(
            email("anna@münchen\u{FF61}de"),
            Ok("anna@münchen.de".into())
        );
        assert_eq!(email("anna@example.co2"), Ok("anna@example.co2".into()));
        // Lengths SMTP and DNS set are lengths.
        for long in [
            format!("alice@{}.com", "a".repeat(64)),
            format!("{}@example.com", "a".repeat(65)),
            format!("a@{}.com", "a.".repeat(130)),
            // 21 letters, 63 bytes, but 67 in DNS's form.
            "a@中文域名测试很长的标签名字用于检查长度是否.cn".to_owned(),
        ] {
            assert_eq!(
                email(&long).map_err(|e| e.code),
                Err(FieldCode::Length),
                "{long}"
            );
        }
        for good in [
            "o'brien+news@example.co.uk",
            "first.last@sub-domain.example.com",
            "émile@bücher.de",
            "user@xn--bcher-kva.de",
            // 80 bytes as letters, 46 in DNS's form.
            &format!("x@{}.de", "ü".repeat(40)),
            "ユーザー@例え.jp",
            "नमस्ते@उदाहरण.भारत",
        ] {
            assert!(email(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn passwords_are_never_truncated() {
        assert!(password("short").is_err());
        assert!(password(&"p".repeat(128)).is_ok());
        assert!(password(&"p".repeat(129)).is_err());
        assert_eq!(password(" padded  ").as_deref(), Ok(" padded  "));
    }

    #[test]
    fn new_passwords() {
        let ok = |p: &str| {
            let (username, email) = ("alice", "alice.smith@example.com");
            new_password(p, username, email)
                .and_then(|p| guessable(&p, username, email).map(|()| p))
        };
        assert!(ok("correct horse battery").is_ok());
        assert!(ok(&"x7!qZ".repeat(25)).is_ok());
        for common in [
            "password1",
            "12345678",
            "qwertyuiop",
            "iloveyou",
            "Password123",
        ] {
            assert_eq!(
                ok(common).map_err(|e| e.code),
                Err(FieldCode::WeakPassword),
                "{common}"
            );
        }
        assert_eq!(
            ok("my name is ALICE, ok?"),
            refused(
                FieldCode::PersonalPassword,
                "must not contain the account's username"
            )
        );
        assert_eq!(
            ok("Alice.Smith rides a bike"),
            refused(
                FieldCode::PersonalPassword,
                "must not contain the account's username"
            )
        );
        assert_eq!(
            new_password("bob.smith rides a bike", "robert", "bob.smith@example.com"),
            refused(
                FieldCode::PersonalPassword,
                "must not contain the account's email address"
            )
        );
        // The local part typed with its accent as two characters is found all the same.
        assert_eq!(
            new_password(
                "e\u{301}lodie harbour 77",
                "robert",
                "\u{E9}lodie@example.com"
            )
            .map_err(|e| e.code),
            Err(FieldCode::PersonalPassword)
        );
        // A one-letter local part is not a reason to refuse.
        assert!(new_password("a strange violet teapot", "robert", "a@example.com").is_ok());
        assert_eq!(ok("short").map_err(|e| e.code), Err(FieldCode::Length));
    }

    #[test]
    fn texts() {
        assert_eq!(optional_text(Some("  ")), Ok(None));
        assert!(optional_text(Some(&"x".repeat(101))).is_err());
        assert_eq!(optional_text(Some(" Ada ")), Ok(Some("Ada".into())));
        assert!(optional_text(Some("Ada\u{7}")).is_err());
        assert!(optional_text(Some("Ada\u{202E}nilrad")).is_err());
        // Persian writes some names with a zero-width non-joiner.
        assert!(optional_text(Some("\u{645}\u{6CC}\u{200C}\u{631}")).is_ok());
        for unseen in [
            "\u{200B}",
            " \u{3164} ",
            "\u{FEFF}\u{200D}",
            "\u{2800}",
            "\u{1D159}\u{1D159}",
            "\u{FFF9}",
            "\u{600}",
            "\u{301}",
            "\u{2062}",
        ] {
            assert!(optional_text(Some(unseen)).is_err(), "{unseen:?}");
            assert!(token_name(unseen).is_err(), "{unseen:?}");
        }
        // Invisible beside visible letters: a name that looks like another.
        for hiding in [
            "\u{200B}Bob\u{200B}",
            "Bo\u{200B}b",
            "\u{2060}Bob",
            "\u{FEFF}Bob",
            "\u{E0041}Bob",
            "\u{FFF9}Bob",
            "Bo\u{AD}b",
            "Bob\u{3164}",
            // Joiners and selectors beside ASCII letters join nothing.
            "Bo\u{200D}b",
            "\u{200C}Bob",
            "Bob\u{FE0F}",
            "Bob\u{E0100}",
            "Bo\u{200B}b",
            "Bob\u{2800}",
            "Bob\u{1D159}",
            // Keycaps are digits, # and *: on a letter the selector is hidden.
            "a\u{FE0F}\u{20E3}",
            // Tags after a black flag that make no flag keyboards offer: hidden text.
            "\u{1F3F4}\u{E0041}Bob",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}\u{E0042}ob",
        ] {
            assert!(optional_text(Some(hiding)).is_err(), "{hiding:?}");
            assert!(token_name(hiding).is_err(), "{hiding:?}");
        }
        // What emoji and some scripts need stays: joiners, variation selectors, a flag's tags.
        for needed in [
            "\u{1F469}\u{200D}\u{1F4BB} Ada",
            "\u{2764}\u{FE0F}",
            "\u{182D}\u{180B}\u{1820}",
            "\u{182C}\u{1820}\u{1837}\u{180E}\u{1820}",
            "1\u{FE0F}\u{20E3} Ada",
            "\u{179F}\u{17BB}\u{200B}\u{1781}",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}\u{1F3F4}",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} Morag",
        ] {
            assert!(optional_text(Some(needed)).is_ok(), "{needed:?}");
            assert!(token_name(needed).is_ok(), "{needed:?}");
        }
        for unassigned in ["Ada\u{FFFE}", "Ada\u{FFFF}", "Ada\u{E000}", "Ada\u{378}"] {
            assert!(optional_text(Some(unassigned)).is_err(), "{unassigned:?}");
        }
        for seen in ["Zoë", "Zoe\u{308}", "李小龍", "😀", "O'Brien-Smith"] {
            assert!(optional_text(Some(seen)).is_ok(), "{seen:?}");
        }
        assert!(token_name("\u{202E}gnp.exe").is_err());
        assert!(token_name("\u{200B}\u{2060}").is_err());
        assert_eq!(token_name(" deploy ").as_deref(), Ok("deploy"));
    }

    #[test]
    fn phones() {
        for ok in [
            "+1 555 0100",
            "(020) 7946-0000",
            "+15550100",
            "555.0100 x12",
            "555-0100 ext. 7",
            "112",
        ] {
            assert_eq!(phone(Some(ok)), Ok(Some(ok.to_owned())), "{ok}");
        }
        assert_eq!(phone(Some("  ")), Ok(None));
        for (typed, kept) in [
            (
                "\u{ff0b}\u{ff11} \u{ff15}\u{ff15}\u{ff15}\u{ff0d}\u{ff10}\u{ff11}",
                "+1 555-01",
            ),
            ("+1\u{a0}555\u{202f}0100", "+1 555 0100"),
            ("555\u{3000}0100 \u{ff58}12", "555 0100 x12"),
            ("\u{2487} 1", "(20) 1"),
        ] {
            assert_eq!(phone(Some(typed)), Ok(Some(kept.to_owned())), "{typed}");
        }
        // Bounded as kept: each `⒇` is four characters once plain.
        let long = format!("1{}{}1", "\u{2487}".repeat(9), " ".repeat(70));
        let refused = phone(Some(&long)).expect_err("108 characters once plain");
        assert!(
            refused.message.contains("100 characters"),
            "{}",
            refused.message
        );
        for bad in [
            "call me",
            "555-0100 x",
            "555 0100 ext 1a",
            "+1 555 0100\u{200B}",
        ] {
            assert_eq!(
                phone(Some(bad)).map_err(|e| e.code),
                Err(FieldCode::Format),
                "{bad}"
            );
        }
        for count in ["12", "+1 (234) 567-8901 234 567 8901"] {
            assert_eq!(
                phone(Some(count)).map_err(|e| e.code),
                Err(FieldCode::Length),
                "{count}"
            );
        }
    }

    #[test]
    fn lookalike_emails_are_one_key() {
        assert_eq!(email(" Ada@Example.COM "), Ok("ada@example.com".into()));
        // Full-width letters, and an accent as one character or as a letter and a mark.
        assert_eq!(
            email("\u{FF41}da@example.com"),
            Ok("ada@example.com".into())
        );
        assert_eq!(
            email("\u{E9}mile@example.com"),
            email("e\u{301}mile@example.com")
        );
        assert_eq!(
            login_key("E\u{301}mile@Example.com"),
            email("\u{C9}mile@example.com").unwrap()
        );
        for bad in [
            "ad\u{200B}a@example.com",
            "ada@exam\u{202E}ple.com",
            "ada\u{FEFF}@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }
}
