//! Users decoded straight from PostgreSQL rows on the pinned read path.
//!
//! SeaORM's generic decoding looks every column up by name, through a formatted string, on
//! every row; a 50-user page spent a fifth of its server time there. Here the columns are
//! found by name once per result and every row is read by position.

use chrono::{DateTime, Utc};
use sea_orm::sqlx::postgres::{PgRow, PgValueFormat};
use sea_orm::sqlx::{Column as _, Row as _, ValueRef as _};
use sea_orm::{ActiveEnum, DbErr, IdenStatic};

use super::entities::user::{Column, Model as User, Role};

/// Models the pinned reads return, decoded from a whole result at once.
pub trait FromPgRows: Sized {
    fn from_pg_rows(rows: Vec<PgRow>) -> Result<Vec<Self>, DbErr>;
}

impl FromPgRows for User {
    fn from_pg_rows(rows: Vec<PgRow>) -> Result<Vec<Self>, DbErr> {
        UserColumns::read_all(&rows, |_, user| Ok(user))
    }
}

/// Where each column of a user sits in the rows of one result.
pub struct UserColumns {
    at: [usize; 14],
}

/// The columns in the order of `UserColumns::at`.
const COLUMNS: [Column; 14] = [
    Column::Id,
    Column::Username,
    Column::UsernameKey,
    Column::Email,
    Column::PasswordHash,
    Column::FirstName,
    Column::LastName,
    Column::Phone,
    Column::Role,
    Column::Disabled,
    Column::CreatedAt,
    Column::UpdatedAt,
    Column::LastLoginAt,
    Column::CreatedBy,
];

impl UserColumns {
    /// Each row's user, passed with its row to `each` for whatever else the row carries.
    pub fn read_all<T>(
        rows: &[PgRow],
        mut each: impl FnMut(&PgRow, User) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, DbErr> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns = Self::find(first)?;
        rows.iter()
            .map(|row| each(row, columns.read(row)?))
            .collect()
    }

    fn find(row: &PgRow) -> Result<Self, DbErr> {
        let mut at = [0; 14];
        for (slot, column) in at.iter_mut().zip(COLUMNS) {
            *slot = row
                .columns()
                .iter()
                .find(|c| c.name() == column.as_str())
                .map(|c| c.ordinal())
                .ok_or_else(|| DbErr::Type(format!("column {} missing", column.as_str())))?;
        }
        Ok(Self { at })
    }

    fn read(&self, row: &PgRow) -> Result<User, DbErr> {
        let at = &self.at;
        let role: String = get(row, at[8])?;
        Ok(User {
            id: get(row, at[0])?,
            username: get(row, at[1])?,
            username_key: get(row, at[2])?,
            email: get(row, at[3])?,
            password_hash: get(row, at[4])?,
            first_name: get(row, at[5])?,
            last_name: get(row, at[6])?,
            phone: get(row, at[7])?,
            role: Role::try_from_value(&role)?,
            disabled: get(row, at[9])?,
            created_at: timestamp(row, at[10])?.ok_or_else(|| null("created_at"))?,
            updated_at: timestamp(row, at[11])?.ok_or_else(|| null("updated_at"))?,
            last_login_at: timestamp(row, at[12])?,
            created_by: get(row, at[13])?,
        })
    }
}

/// One value, decoded without sqlx's per-value check that the column's type suits `T`: the
/// migration fixes every column's type, and decoding still fails on bytes that do not fit.
fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, DbErr>
where
    T: sea_orm::sqlx::Decode<'r, sea_orm::sqlx::Postgres>
        + sea_orm::sqlx::Type<sea_orm::sqlx::Postgres>,
{
    row.try_get_unchecked(index)
        .map_err(|err| DbErr::Type(err.to_string()))
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz`. In binary results it is microseconds since 2000-01-01, read here in one
/// step instead of through chrono's calendar arithmetic.
fn timestamp(row: &PgRow, index: usize) -> Result<Option<DateTime<Utc>>, DbErr> {
    let value = row
        .try_get_raw(index)
        .map_err(|err| DbErr::Type(err.to_string()))?;
    if value.is_null() {
        return Ok(None);
    }
    if value.format() != PgValueFormat::Binary {
        return get(row, index);
    }
    let micros = value
        .as_bytes()
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(i64::from_be_bytes)
        .and_then(|micros| micros.checked_add(PG_EPOCH_MICROS))
        .and_then(DateTime::from_timestamp_micros);
    micros
        .map(Some)
        .ok_or_else(|| DbErr::Type(format!("column {index}: not a timestamptz")))
}

fn null(column: &str) -> DbErr {
    DbErr::Type(format!("column {column} is null"))
}
