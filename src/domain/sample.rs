//! A small, complete catalog for examples, tests, benchmarks and the load
//! generator: one tenant, sellers each with a van, one customer, priced
//! products and devices, made with the ordinary catalog functions.

use automerge::Automerge;

use super::{
    create_catalog_doc, put_customer, put_device, put_location, put_product, put_seller, Currency,
    Customer, CustomerId, DeviceId, DeviceRecord, DomainError, Location, LocationId, LocationKind,
    Product, ProductId, Seller, SellerId, TenantId,
};

/// What [`sample_catalog`] writes. Every seller `s` gets a vehicle
/// location `van-{s}`; prices are in EUR cents; a device is
/// `(id, seller, receipt prefix)`.
#[derive(Debug, Clone)]
pub struct SampleCatalog<'a> {
    pub tenant: &'a str,
    pub sellers: &'a [&'a str],
    pub customer: &'a str,
    pub products: &'a [(&'a str, i64)],
    pub devices: &'a [(&'a str, &'a str, &'a str)],
}

/// The catalog document `sample` describes.
pub fn sample_catalog(sample: &SampleCatalog<'_>) -> Result<Automerge, DomainError> {
    let mut catalog = create_catalog_doc(&TenantId::new(sample.tenant)?)?;
    let eur = Currency::new("EUR")?;
    for (product, unit_price_cents) in sample.products {
        put_product(
            &mut catalog,
            &Product {
                id: ProductId::new(*product)?,
                name: format!("Product {product}"),
                unit_price_cents: *unit_price_cents,
                currency: eur,
                active: true,
            },
        )?;
    }
    put_customer(
        &mut catalog,
        &Customer {
            id: CustomerId::new(sample.customer)?,
            name: format!("Customer {}", sample.customer),
        },
    )?;
    for seller in sample.sellers {
        let seller = SellerId::new(*seller)?;
        put_seller(
            &mut catalog,
            &Seller {
                id: seller.clone(),
                name: format!("Seller {seller}"),
            },
        )?;
        put_location(
            &mut catalog,
            &Location {
                id: LocationId::new(format!("van-{seller}"))?,
                name: format!("Van of {seller}"),
                kind: LocationKind::Vehicle,
                seller: Some(seller),
            },
        )?;
    }
    for (device, seller, receipt_prefix) in sample.devices {
        put_device(
            &mut catalog,
            &DeviceRecord {
                id: DeviceId::new(*device)?,
                seller: SellerId::new(*seller)?,
                receipt_prefix: (*receipt_prefix).into(),
            },
        )?;
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::read_catalog;

    #[test]
    fn the_sample_catalog_reads_back_without_violations() -> Result<(), DomainError> {
        let catalog = sample_catalog(&SampleCatalog {
            tenant: "acme",
            sellers: &["ana", "bea"],
            customer: "shop-9",
            products: &[("soap", 250), ("brush", 1_199)],
            devices: &[("tab-1", "ana", "K1")],
        })?;
        let view = read_catalog(&catalog);
        assert!(view.violations.is_empty(), "{:?}", view.violations);
        assert_eq!(view.products.len(), 2);
        assert_eq!(view.locations.len(), 2);
        assert_eq!(view.devices.len(), 1);
        Ok(())
    }
}
