//! Event triggers: the names operators write in `event = "…"` and how each maps onto the
//! protocol's [`Event`].
//!
//! The rule files use one lower-case name per thing a follower does, rather than WeChat's
//! wire names (`SCAN`, `scancode_push`, `change_external_contact` with a `ChangeType`), so
//! that one rule covers both scancode flavours and WeCom's two "added" changes.

use crate::protocol::{Event, ExternalContactChange};

/// What an event rule listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventKind {
    Subscribe,
    Unsubscribe,
    Scan,
    Click,
    View,
    Location,
    ScanCode,
    EnterAgent,
    AddExternalContact,
    DelExternalContact,
    TemplateFinish,
    MassFinish,
}

/// Which filter an event kind accepts besides the kind itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `scene`: the parametric QR scene, or the WeCom channel code's state.
    Scene,
    /// `key`: the menu key (for `view`, the menu's URL).
    Key,
    None,
}

impl EventKind {
    /// In the order the format documents them; error messages list them so.
    pub const ALL: [EventKind; 12] = [
        EventKind::Subscribe,
        EventKind::Unsubscribe,
        EventKind::Scan,
        EventKind::Click,
        EventKind::View,
        EventKind::Location,
        EventKind::ScanCode,
        EventKind::EnterAgent,
        EventKind::AddExternalContact,
        EventKind::DelExternalContact,
        EventKind::TemplateFinish,
        EventKind::MassFinish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::Scan => "scan",
            EventKind::Click => "click",
            EventKind::View => "view",
            EventKind::Location => "location",
            EventKind::ScanCode => "scancode",
            EventKind::EnterAgent => "enter_agent",
            EventKind::AddExternalContact => "add_external_contact",
            EventKind::DelExternalContact => "del_external_contact",
            EventKind::TemplateFinish => "template_finish",
            EventKind::MassFinish => "mass_finish",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn filter(self) -> Filter {
        match self {
            EventKind::Subscribe | EventKind::Scan | EventKind::AddExternalContact => Filter::Scene,
            EventKind::Click | EventKind::View | EventKind::ScanCode => Filter::Key,
            _ => Filter::None,
        }
    }

    /// The kind of `event`, and the value its `scene`/`key` filter is tested against
    /// (`None` when the event carries none, or an empty one). `None` for events no rule
    /// can name (picture/location pickers, mini-program links, WeCom member changes, …).
    pub fn of(event: &Event) -> Option<(EventKind, Option<&str>)> {
        let (kind, value) = match event {
            Event::Subscribe { scene, .. } => (EventKind::Subscribe, scene.as_deref()),
            Event::Unsubscribe => (EventKind::Unsubscribe, None),
            Event::Scan { scene, .. } => (EventKind::Scan, Some(scene.as_str())),
            Event::ReportLocation { .. } => (EventKind::Location, None),
            Event::Click { key } => (EventKind::Click, Some(key.as_str())),
            Event::View { url, .. } => (EventKind::View, Some(url.as_str())),
            Event::ScanCode { key, .. } => (EventKind::ScanCode, Some(key.as_str())),
            Event::EnterAgent { .. } => (EventKind::EnterAgent, None),
            Event::ExternalContact { change, state, .. } => match change {
                ExternalContactChange::Add | ExternalContactChange::AddHalf => {
                    (EventKind::AddExternalContact, state.as_deref())
                }
                ExternalContactChange::Del | ExternalContactChange::DelFollowUser => {
                    (EventKind::DelExternalContact, None)
                }
                _ => return None,
            },
            Event::TemplateSendJobFinish { .. } => (EventKind::TemplateFinish, None),
            Event::MassSendJobFinish { .. } => (EventKind::MassFinish, None),
            _ => return None,
        };
        Some((kind, value.filter(|v| !v.is_empty())))
    }
}

/// The scene this event brought, for `{scene}`: a QR scene or channel-code state.
pub(crate) fn event_scene(event: &Event) -> Option<&str> {
    match EventKind::of(event)? {
        (kind, scene) if kind.filter() == Filter::Scene => scene,
        _ => None,
    }
}

/// `{event_key}`: the EventKey as WeChat sent it (menu key, URL, scene, channel state…).
pub(crate) fn event_key(event: &Event) -> Option<&str> {
    match event {
        Event::Subscribe { scene, .. } => scene.as_deref(),
        Event::Scan { scene, .. } => Some(scene),
        Event::Click { key }
        | Event::ScanCode { key, .. }
        | Event::PicSelect { key, .. }
        | Event::LocationSelect { key, .. } => Some(key),
        Event::View { url, .. } => Some(url),
        Event::ViewMiniprogram { path, .. } => Some(path),
        Event::EnterAgent { key } | Event::Other { key, .. } => key.as_deref(),
        Event::ExternalContact { state, .. } => state.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.name()), Some(kind), "{}", kind.name());
        }
        assert_eq!(
            EventKind::parse("SCAN"),
            None,
            "wire names are not rule names"
        );
    }

    type Mapped = (EventKind, Option<&'static str>);

    #[test]
    fn mapping() {
        let s = |v: &str| v.to_string();
        let contact = |change, state: Option<&str>| Event::ExternalContact {
            change,
            user_id: s("staff"),
            external_user_id: s("wm1"),
            state: state.map(s),
            welcome_code: None,
        };
        let cases: Vec<(&str, Event, Option<Mapped>)> = vec![
            (
                "subscribe with scene",
                Event::Subscribe {
                    scene: Some(s("spring-poster")),
                    ticket: None,
                },
                Some((EventKind::Subscribe, Some("spring-poster"))),
            ),
            (
                "subscribe with empty scene",
                Event::Subscribe {
                    scene: Some(s("")),
                    ticket: None,
                },
                Some((EventKind::Subscribe, None)),
            ),
            (
                "unsubscribe",
                Event::Unsubscribe,
                Some((EventKind::Unsubscribe, None)),
            ),
            (
                "scan",
                Event::Scan {
                    scene: s("42"),
                    ticket: None,
                },
                Some((EventKind::Scan, Some("42"))),
            ),
            (
                "click",
                Event::Click { key: s("K") },
                Some((EventKind::Click, Some("K"))),
            ),
            (
                "view uses the url as key",
                Event::View {
                    url: s("https://x"),
                    menu_id: None,
                },
                Some((EventKind::View, Some("https://x"))),
            ),
            (
                "scancode_waitmsg",
                Event::ScanCode {
                    wait: true,
                    key: s("S"),
                    scan_type: s("qrcode"),
                    scan_result: s("r"),
                },
                Some((EventKind::ScanCode, Some("S"))),
            ),
            (
                "location",
                Event::ReportLocation {
                    latitude: 1.0,
                    longitude: 2.0,
                    precision: 3.0,
                },
                Some((EventKind::Location, None)),
            ),
            (
                "enter_agent",
                Event::EnterAgent { key: None },
                Some((EventKind::EnterAgent, None)),
            ),
            (
                "external contact add with state",
                contact(ExternalContactChange::Add, Some("shop-7")),
                Some((EventKind::AddExternalContact, Some("shop-7"))),
            ),
            (
                "external contact half add",
                contact(ExternalContactChange::AddHalf, None),
                Some((EventKind::AddExternalContact, None)),
            ),
            (
                "external contact deleted by staff",
                contact(ExternalContactChange::DelFollowUser, None),
                Some((EventKind::DelExternalContact, None)),
            ),
            (
                "external contact edit has no rule",
                contact(ExternalContactChange::Edit, None),
                None,
            ),
            (
                "template finish",
                Event::TemplateSendJobFinish {
                    msg_id: 1,
                    status: s("success"),
                },
                Some((EventKind::TemplateFinish, None)),
            ),
            (
                "mass finish",
                Event::MassSendJobFinish {
                    msg_id: 1,
                    status: s("send success"),
                    total_count: 1,
                    filter_count: 1,
                    sent_count: 1,
                    error_count: 0,
                },
                Some((EventKind::MassFinish, None)),
            ),
            (
                "unknown event",
                Event::Other {
                    event: s("x"),
                    key: None,
                },
                None,
            ),
        ];
        for (name, event, expected) in cases {
            assert_eq!(EventKind::of(&event), expected, "{name}");
        }
    }

    #[test]
    fn scene_and_key_for_placeholders() {
        let sub = Event::Subscribe {
            scene: Some("p".into()),
            ticket: None,
        };
        assert_eq!((event_scene(&sub), event_key(&sub)), (Some("p"), Some("p")));
        let click = Event::Click { key: "MENU".into() };
        assert_eq!(
            (event_scene(&click), event_key(&click)),
            (None, Some("MENU"))
        );
    }
}
