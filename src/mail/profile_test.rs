//! "Send test message" for an email profile (`POST /api/v1/profiles/{name}/test`,
//! `officebridge profiles test`): the built-in test message sent through the profile now,
//! bypassing the queue, with what each step answered — for SMTP connect, TLS, AUTH,
//! MAIL/RCPT and DATA with the server's replies; for Graph the token and the send with its
//! `request-id` — so an administrator sees where a profile breaks before trusting it.

use super::graph::GraphDelivery;
use super::outbox::{Failure, Outbox};
use super::smtp::{StepReport, Target, Trace};
use crate::domain::{EmailAddress, Importance, Recipient, StoredMessage};
use crate::graph::Principal;
use crate::store::models::{Profile, SettingsView};
use std::time::Instant;

/// Where a test stopped.
#[derive(Debug)]
pub struct TestFailed {
    pub step: String,
    pub detail: String,
    pub steps: Vec<StepReport>,
}

/// The built-in test message.
pub fn test_message(profile: &Profile, to: &EmailAddress) -> StoredMessage {
    StoredMessage {
        to: vec![Recipient {
            address: to.clone(),
            name: None,
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: format!("officebridge test message (profile {})", profile.name),
        text: Some(format!(
            "This message was sent by officebridge to test the email profile {} ({}). No action is needed.",
            profile.name,
            profile.provider.as_str()
        )),
        html: None,
        importance: Importance::Normal,
    }
}

fn failure_detail(f: &Failure) -> String {
    match f {
        Failure::Transient { reason, .. } | Failure::Permanent(reason) | Failure::Signin(reason) | Failure::Ambiguous(reason) => {
            reason.detail.clone()
        }
    }
}

/// Sends the test message through `profile` to `to`; `operator` for `graph_delegate`.
pub async fn run(ob: &Outbox, profile: &Profile, to: &EmailAddress, operator: Option<&str>) -> Result<Vec<StepReport>, TestFailed> {
    let message = test_message(profile, to);
    let mut trace = Trace::default();
    match &profile.settings {
        SettingsView::Smtp { .. } => {
            let fail = |step: &str, f: &Failure, trace: Trace| TestFailed {
                step: step.into(),
                detail: failure_detail(f),
                steps: trace.0,
            };
            let target = Target::load(ob, profile.name.as_str())
                .await
                .map_err(|f| fail("profile", &f, Trace::default()))?;
            let id = uuid::Uuid::new_v4().to_string();
            let built = super::smtp::build(
                &message,
                &target.settings,
                super::smtp::message_id(&id, target.settings.from.as_str()),
                std::time::SystemTime::now(),
                vec![],
            )
            .map_err(|f| fail("message", &f, Trace::default()))?;
            match target.send_once(ob, &built, &mut trace).await {
                Ok(_) => Ok(trace.0),
                Err(f) => {
                    let step = trace.0.iter().rev().find(|s| !s.ok).map_or("token".to_string(), |s| s.step.clone());
                    Err(fail(&step, &f, trace))
                }
            }
        }
        SettingsView::GraphDelegate(_) | SettingsView::GraphDirect { .. } => {
            let failed = |step: &str, f: &Failure, steps: Vec<StepReport>| TestFailed {
                step: step.into(),
                detail: failure_detail(f),
                steps,
            };
            let d = GraphDelivery::for_profile(ob, profile.name.as_str(), operator)
                .await
                .map_err(|f| failed("profile", &f, vec![]))?;
            let t = Instant::now();
            let token = match d.principal() {
                Principal::Operator(op) => ob
                    .graph
                    .tokens()
                    .operator_token(op)
                    .await
                    .map(|_| format!("a delegated token for operator {op}")),
                Principal::App { tenant, mailbox, app } => ob
                    .graph
                    .tokens()
                    .app_token_as(tenant, app.as_ref())
                    .await
                    .map(|_| format!("an application token of tenant {tenant} to send as {mailbox}")),
                Principal::OnBehalfOf { .. } => Ok("an on-behalf-of token".to_string()),
            };
            match token {
                Ok(detail) => trace.push("token", true, detail, t),
                Err(e) => {
                    let f = Failure::from_token(&e);
                    trace.push("token", false, failure_detail(&f), t);
                    return Err(failed("token", &f, trace.0));
                }
            }
            let t = Instant::now();
            match d.send_now(ob, &message).await {
                Ok(request_id) => {
                    trace.push(
                        "send",
                        true,
                        format!("Microsoft Graph accepted the message (202); request-id {request_id}"),
                        t,
                    );
                    Ok(trace.0)
                }
                Err(f) => {
                    trace.push("send", false, failure_detail(&f), t);
                    Err(failed("send", &f, trace.0))
                }
            }
        }
    }
}
