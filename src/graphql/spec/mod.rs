//! Where async-graphql departs from the GraphQL specification, mended around it, so clients
//! generated from the schema can trust what they are sent: input values checked against their
//! types before anything runs (`coercion`), fields under one response key merged as the
//! specification requires (`overlap`), failed fields nulled up to a nullable parent (`nulls`),
//! and the root's keys in the document's order (`order`); the schema's own description in place
//! of async-graphql's fixed text (`description`); string escapes the parser does not know,
//! rewritten before it reads them (`strings`); an input object naming a field twice, refused
//! where the parser keeps the last (`input_fields`); a selection written twice run once
//! (`repeats`); an object whose fields are all skipped kept an object (`kept`). All but
//! `overlap`, `input_fields`, `repeats` and `kept` read the schema's types (`schema_types`).
//! Nothing here makes a rule of rollcall's own.

pub(super) mod coercion;
pub(super) mod description;
pub(super) mod input_fields;
pub(super) mod kept;
mod nulls;
pub(super) mod order;
pub(super) mod overlap;
pub(super) mod repeats;
pub(super) mod schema_types;
pub(super) mod strings;
