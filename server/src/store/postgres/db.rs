//! A connection or a transaction, with statements prepared once per connection.

use super::db_err;
use anyhow::Result;
use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

#[derive(Clone, Copy)]
pub enum Db<'a, 'b> {
    Conn(&'a ClientWrapper),
    Tx(&'a Transaction<'b>),
}

impl Db<'_, '_> {
    async fn statement(self, sql: &str) -> Result<tokio_postgres::Statement> {
        match self {
            Db::Conn(c) => c.prepare_cached(sql).await,
            Db::Tx(t) => t.prepare_cached(sql).await,
        }
        .map_err(db_err)
    }

    pub async fn query(self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        let st = self.statement(sql).await?;
        match self {
            Db::Conn(c) => c.query(&st, params).await,
            Db::Tx(t) => t.query(&st, params).await,
        }
        .map_err(db_err)
    }

    pub async fn opt(self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        let st = self.statement(sql).await?;
        match self {
            Db::Conn(c) => c.query_opt(&st, params).await,
            Db::Tx(t) => t.query_opt(&st, params).await,
        }
        .map_err(db_err)
    }

    pub async fn one(self, sql: &str, params: Params<'_>) -> Result<Row> {
        let st = self.statement(sql).await?;
        match self {
            Db::Conn(c) => c.query_one(&st, params).await,
            Db::Tx(t) => t.query_one(&st, params).await,
        }
        .map_err(db_err)
    }

    pub async fn exec(self, sql: &str, params: Params<'_>) -> Result<u64> {
        let st = self.statement(sql).await?;
        match self {
            Db::Conn(c) => c.execute(&st, params).await,
            Db::Tx(t) => t.execute(&st, params).await,
        }
        .map_err(db_err)
    }
}
