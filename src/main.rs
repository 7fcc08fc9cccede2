fn main() {
    print!("{}", stackd::crd::crd_yaml());
}
