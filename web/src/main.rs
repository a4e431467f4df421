fn main() {
    ax_web::mount();
}
