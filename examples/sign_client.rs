//! A minimal gRPC client: signs a few URLs on a running cdnsign and prints them.
//!
//! ```text
//! cargo run --example sign_client -- [http://127.0.0.1:50051] [URL ...]
//! ```

use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, sign_url_result::Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let mut urls: Vec<String> = args.collect();
    if urls.is_empty() {
        urls = (1..=3)
            .map(|i| format!("https://d111111abcdef8.cloudfront.net/hls/demo/seg{i}.ts"))
            .collect();
        // One bad item shows a per-item error next to the signed ones.
        urls.push("not a url".to_owned());
    }
    let mut client = SignerClient::connect(addr).await?;
    let response = client
        .sign_urls(SignUrlsRequest {
            items: urls
                .into_iter()
                .map(|url| SignItem {
                    url,
                    ..SignItem::default()
                })
                .collect(),
            ttl_seconds: 3600,
            ..SignUrlsRequest::default()
        })
        .await?
        .into_inner();
    for r in response.results {
        match r.outcome {
            Some(Outcome::SignedUrl(url)) => println!("{url}"),
            Some(Outcome::Error(e)) => println!("error {}: {}", e.field, e.message),
            None => println!("(empty result)"),
        }
    }
    Ok(())
}
