//! The boot service on `boot_addr`: machines' firmware (iPXE, chain-loaded by the site's
//! DHCP) asks `GET /boot/{mac}.ipxe` and gets the script for the machine's re-image in
//! progress (kernel, initrd, and a command line that tells the node agent its server, its
//! gateway, the epoch and the boot's one-time token), or `exit` (boot from the local disk)
//! when no re-image is pending. The answer comes from the site core at the moment of the
//! request, so a machine never gets a script for an epoch that is not current.

use std::sync::Arc;

use actix::Addr;
use actix_web::{App, HttpResponse, HttpServer, web};
use leasehold_federation::ids::SiteId;
use leasehold_federation::placeholders::expand;

use super::boot_key::BootKey;
use crate::actors::master::{BootScriptFor, SiteMaster};
use crate::config::normal_mac;
use crate::model::core::BootAnswer;

#[derive(Clone)]
struct Boot {
    master: Addr<SiteMaster>,
    key: Arc<BootKey>,
    site: SiteId,
    /// The management address machines are told to dial.
    gateway: leasehold_federation::addr::HostPort,
}

pub fn serve(
    listener: std::net::TcpListener,
    master: Addr<SiteMaster>,
    key: Arc<BootKey>,
    site: SiteId,
    gateway: leasehold_federation::addr::HostPort,
) -> std::io::Result<actix_web::dev::Server> {
    let boot = Boot {
        master,
        key,
        site,
        gateway,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(boot.clone()))
            .route("/boot/{file}", web::get().to(script))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

async fn script(boot: web::Data<Boot>, file: web::Path<String>) -> HttpResponse {
    let Some(mac) = file.strip_suffix(".ipxe").and_then(normal_mac) else {
        return HttpResponse::NotFound()
            .content_type("text/plain")
            .body(format!(
                "{file}: ask for /boot/<mac>.ipxe, e.g. /boot/52-54-00-12-34-56.ipxe\n"
            ));
    };
    let answer = match boot.master.send(BootScriptFor { mac: mac.clone() }).await {
        Ok(answer) => answer,
        Err(_) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("the gateway is stopping\n");
        }
    };
    let text = match answer {
        BootAnswer::Unknown => {
            tracing::warn!(%mac, "boot script asked for by a MAC no machine of this site has");
            return HttpResponse::NotFound()
                .content_type("text/plain")
                .body(format!("no machine of site {} has MAC {mac}\n", boot.site));
        }
        BootAnswer::Disk => {
            tracing::info!(%mac, "boot script: no re-image pending, boot from disk");
            format!(
                "#!ipxe\n# Leasehold {}: no re-image is pending for {mac}; boot from the local disk\nexit\n",
                boot.site
            )
        }
        BootAnswer::Image {
            server,
            account,
            epoch,
            image,
        } => {
            tracing::info!(%mac, %server, %account, %epoch, "boot script: re-image");
            let value = |name: &str| match name {
                "server" => Some(server.to_string()),
                "account" => Some(account.to_string()),
                "epoch" => Some(epoch.value().to_string()),
                _ => None,
            };
            let token = boot.key.token(&server, epoch);
            let cmdline = expand(&image.cmdline, value);
            format!(
                "#!ipxe\n# Leasehold {site}: {server} boots {account} under {epoch}\nkernel {kernel} {cmdline}{space}leasehold.server={server} leasehold.gateway={gateway} leasehold.epoch={epoch_value} leasehold.token={token}\ninitrd {initrd}\nboot\n",
                site = boot.site,
                kernel = expand(&image.kernel, value),
                initrd = expand(&image.initrd, value),
                space = if cmdline.is_empty() { "" } else { " " },
                gateway = boot.gateway,
                epoch_value = epoch.value(),
            )
        }
    };
    HttpResponse::Ok().content_type("text/plain").body(text)
}
