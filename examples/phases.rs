use railyard::model::{self, Environment, Observed, RepoFile};
use railyard::plan;
use std::time::Instant;
include!("/tmp/ex/repo.rs");
fn main() {
    let files = repository(1000, 1000);
    for _ in 0..3 {
        let t = Instant::now();
        let mut d = Vec::new();
        let docs = model::load::read_documents(&files, &mut d);
        let t1 = t.elapsed();
        let config = model::validate::validate(docs, d).unwrap();
        let t2 = t.elapsed();
        let desired = config.desired(&Environment::production("bench"), Some("next"));
        let t3 = t.elapsed();
        let p = plan::plan(&desired, &Observed::default());
        let t4 = t.elapsed();
        println!("read {:?} validate {:?} desired {:?} plan {:?} ({})", t1, t2 - t1, t3 - t2, t4 - t3, p.apps.len());
    }
}
