//! gRPC glue: an interceptor that turns `authorization: Bearer <jwt>` metadata
//! into an [`Actor`] in the request's extensions.

use tonic::{Request, Status};

use super::Verifier;
use crate::domain::Actor;

pub fn interceptor(verifier: Verifier) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let actor = verifier.verify_bearer(header).map_err(Status::from)?;
        crate::telemetry::record_caller(&actor);
        req.extensions_mut().insert(actor);
        Ok(req)
    }
}

/// The caller the interceptor verified.
pub fn actor<T>(req: &Request<T>) -> Result<Actor, Status> {
    req.extensions().get::<Actor>().cloned().ok_or_else(|| Status::unauthenticated("missing bearer token"))
}
