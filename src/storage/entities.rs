//! sea-orm entities, one module per table. Times are Unix milliseconds and
//! JSON is stored as text so the same schema runs on SQLite and PostgreSQL.

pub mod task {
    use sea_orm::entity::prelude::*;

    // Serde: an idempotency key keeps the answer it gave as this row (JSON).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant: String,
        pub title: String,
        pub description: String,
        pub agent_id: Option<String>,
        pub status: String,
        pub progress: i32,
        pub step: String,
        pub tool: String,
        pub message: String,
        pub error: String,
        pub result: String,
        pub created_by: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub completed_at: Option<i64>,
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub agent_type: String,
        pub capabilities: String,
        pub status: String,
        pub created_at: i64,
        pub last_seen_at: i64,
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub tenant: String,
        pub topic: String,
        pub resource: String,
        /// [`crate::storage::convert::resource_key`] of `tenant` and
        /// `resource`: what the log is indexed by per resource.
        pub resource_key: i64,
        pub event_type: String,
        pub actor: String,
        pub created_at: i64,
        pub data: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod execution {
    use sea_orm::entity::prelude::*;

    // Serde: an idempotency key keeps the answer it gave as this row (JSON).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "executions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant: String,
        pub agent_id: String,
        pub task_id: Option<String>,
        pub input: String,
        pub status: String,
        pub output: String,
        pub error: String,
        pub cancel_requested_at: Option<i64>,
        pub executor: Option<String>,
        pub executor_subject: Option<String>,
        pub detached_at: Option<i64>,
        pub pending_approvals: i32,
        pub created_by: String,
        pub created_at: i64,
        pub updated_at: i64,
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod approval {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "approvals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub tenant: String,
        pub execution_id: String,
        pub tool_call_id: String,
        pub action: String,
        pub arguments: String,
        pub allowed_decisions: String,
        pub arguments_schema: Option<String>,
        pub deadline: Option<i64>,
        pub deadline_decision: String,
        pub requested_by: String,
        pub requested_at: i64,
        /// The whole decision as JSON, null while pending.
        pub decision: Option<String>,
        pub decided_at: Option<i64>,
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The command it was first used for (`create_task`, `report`, …).
        pub operation: String,
        /// SHA-256 (hex) of that request, to refuse the key for another one.
        pub fingerprint: String,
        /// The answer given, as JSON: `{"task": row}` or `{"execution": row}`.
        pub result: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
