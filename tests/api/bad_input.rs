//! Every kind of bad callback: the right status, and no follower state written.

use siyu::protocol::{sign, AesKey, MsgCrypt};

use crate::helpers::*;

struct Case {
    name: &'static str,
    path: String,
    body: String,
    status: u16,
    /// A fragment the one-line body must contain.
    says: &'static str,
}

/// A safe-mode request whose signature is right for whatever `encrypt` is.
fn safe_with_encrypt(encrypt: &str, ts: i64) -> (String, String) {
    let ts = ts.to_string();
    let msg_signature = sign(OFFICIAL_TOKEN, &[&ts, "1", encrypt]);
    let signature = sign(OFFICIAL_TOKEN, &[&ts, "1"]);
    (
        format!("/wx/safe?signature={signature}&timestamp={ts}&nonce=1&openid=o_bad&encrypt_type=aes&msg_signature={msg_signature}"),
        format!("<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
    )
}

fn plain_with_body(body: &str) -> (String, String) {
    let ts = now().to_string();
    let signature = sign(OFFICIAL_TOKEN, &[&ts, "1"]);
    (
        format!("/wx/plain?signature={signature}&timestamp={ts}&nonce=1&openid=o_bad"),
        body.to_string(),
    )
}

fn cases() -> Vec<Case> {
    let good = SAFE.text("o_bad", "优惠券", 1);
    let (good_query, good_body) = SAFE.request(&good, now(), "1");
    let case = |name, (path, body): (String, String), status, says| Case {
        name,
        path,
        body,
        status,
        says,
    };
    let stale = SAFE.request(&good, now() - 3600, "1");
    let future = SAFE.request(&good, now() + 3600, "1");
    let wrong_app = MsgCrypt::new(AesKey::parse(OFFICIAL_KEY).unwrap(), "wxSOMEONEELSE0000");
    let missing_from = format!(
        "<xml><ToUserName>{GH_ID}</ToUserName><CreateTime>{}</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>",
        now()
    );
    vec![
        case(
            "wrong msg_signature",
            (
                format!(
                    "/wx/safe?{}",
                    good_query.replace("msg_signature=", "msg_signature=0")
                ),
                good_body.clone(),
            ),
            401,
            "signature",
        ),
        case(
            "missing msg_signature",
            (
                format!(
                    "/wx/safe?{}",
                    good_query.split("&msg_signature").next().unwrap()
                ),
                good_body.clone(),
            ),
            401,
            "msg_signature",
        ),
        case(
            "missing timestamp",
            (
                "/wx/safe?nonce=1&encrypt_type=aes&msg_signature=abc".to_string(),
                good_body.clone(),
            ),
            401,
            "timestamp",
        ),
        case(
            "stale timestamp",
            (format!("/wx/safe?{}", stale.0), stale.1),
            401,
            "stale",
        ),
        case(
            "timestamp from the future",
            (format!("/wx/safe?{}", future.0), future.1),
            401,
            "stale",
        ),
        case(
            "wrong plaintext signature",
            (
                format!("/wx/plain?signature=deadbeef&timestamp={}&nonce=1", now()),
                good.clone(),
            ),
            401,
            "signature",
        ),
        case(
            "unknown account",
            (format!("/wx/nobody?{good_query}"), good_body.clone()),
            404,
            "unknown account",
        ),
        case(
            "safe mode without encrypt_type",
            (
                format!(
                    "/wx/safe?{}",
                    good_query.replace("encrypt_type=aes", "encrypt_type=raw")
                ),
                good_body.clone(),
            ),
            400,
            "safe mode",
        ),
        case(
            "malformed envelope",
            (safe_with_encrypt("x", now()).0, "<xml><Encrypt>".into()),
            400,
            "",
        ),
        case(
            "bad base64",
            safe_with_encrypt("!!!not base64!!!", now()),
            400,
            "",
        ),
        case(
            "bad padding",
            // Valid base64 of 32 random-ish bytes: decrypts to garbage with a bad pad.
            safe_with_encrypt("3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhs=", now()),
            400,
            "",
        ),
        case(
            "wrong receive id",
            safe_with_encrypt(&wrong_app.encrypt(&good, [1; 16]), now()),
            400,
            "receive id",
        ),
        case(
            "missing FromUserName",
            safe_with_encrypt(&SAFE.crypt().encrypt(&missing_from, [2; 16]), now()),
            400,
            "FromUserName",
        ),
        case(
            "doctype in plaintext",
            plain_with_body(&format!(
                "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
                PLAIN.text("o_bad", "&x;", 3)
            )),
            400,
            "",
        ),
        case("not xml at all", plain_with_body("hello there"), 400, ""),
        case(
            "oversized body",
            plain_with_body(&format!(
                "<xml><Content>{}</Content></xml>",
                "a".repeat(70 * 1024)
            )),
            413,
            "larger than",
        ),
    ]
}

#[tokio::test]
async fn bad_callbacks_are_refused_with_the_right_status_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    for c in cases() {
        let r = app.post(&c.path, c.body.clone()).await;
        assert_eq!(r.status, c.status, "case `{}`: body {:?}", c.name, r.body);
        assert!(
            r.body.to_lowercase().contains(&c.says.to_lowercase()),
            "case `{}`: {:?} should say {:?}",
            c.name,
            r.body,
            c.says
        );
        assert!(!r.body.contains(OFFICIAL_KEY) && !r.body.contains(OFFICIAL_TOKEN));
    }
    assert!(
        app.store.follower("safe", "o_bad").unwrap().is_none(),
        "no bad input may create or change a follower"
    );
    assert!(app.store.follower("plain", "o_bad").unwrap().is_none());
    // The server is still fine, and the same message done right is accepted.
    let ok = app
        .exchange(SAFE, &SAFE.text("o_bad", "优惠券", 1))
        .await
        .unwrap();
    assert_eq!(tag(&ok, "Content").as_deref(), Some("领券成功，第 1 次"));
    app.stop().await;
}

#[tokio::test]
async fn bad_url_verifications_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(&dir).await;
    let ts = now().to_string();
    let echostr = CORP.crypt().encrypt("12345", [3; 16]);
    let good_sig = sign(CORP_TOKEN, &[&ts, "9", &echostr]);
    let ok = app
        .get(&format!(
            "/wx/corp?msg_signature={good_sig}&timestamp={ts}&nonce=9&echostr={}",
            encode(&echostr)
        ))
        .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "12345"));
    // A signature that differs from the good one in its first digit, whatever that digit is
    // (a fixed "00" prefix equalled the good signature in 1 run of 256).
    let tampered = format!(
        "{}{}",
        if good_sig.starts_with('0') { '1' } else { '0' },
        &good_sig[1..]
    );
    let cases = [
        (
            format!(
                "/wx/corp?msg_signature={tampered}&timestamp={ts}&nonce=9&echostr={}",
                encode(&echostr)
            ),
            401,
        ),
        (
            format!("/wx/corp?msg_signature={good_sig}&timestamp={ts}&nonce=9"),
            401,
        ),
        (
            format!("/wx/safe?signature=abc&timestamp={ts}&nonce=9&echostr=1"),
            401,
        ),
        (
            format!("/wx/missing?signature=abc&timestamp={ts}&nonce=9&echostr=1"),
            404,
        ),
    ];
    for (path, status) in cases {
        assert_eq!(app.get(&path).await.status, status, "{path}");
    }
    app.stop().await;
}
